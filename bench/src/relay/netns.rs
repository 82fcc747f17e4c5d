//! `wavry-bench relay --topology netns`: the relay on AF_XDP against the same relay on
//! io_uring and the naive forwarder, each alone in the relay namespace of a
//! sender ─ relay ─ receiver topology of veth pairs ([`wavry_netns::Topology`]).
//!
//! CPU accounting is the same for every forwarder: it and the relay namespace's threaded-NAPI
//! kernel threads are pinned to `--relay-cpus`, everything else (this process, the end hosts'
//! NAPI threads) to the other CPUs, and the cost of a measurement is all non-idle time on the
//! relay CPUs from /proc/stat (user, system, irq, softirq), where XDP and the kernel's UDP
//! path both run. The end hosts send complete checksums and no GSO over the veth (as frames
//! from a wire arrive), so a GSO batch reaches the relay as separate frames, which the io_uring
//! relay's GRO merges again and the XDP relay takes one by one.
//!
//! Per round: the io_uring relay (saturation with single datagrams from many flows and with
//! GSO-sourced traffic, then added latency at half its single-datagram saturation rate), the
//! XDP relay (the same, latency at that same rate), the naive forwarder (saturation). Ratios
//! are per round, then the median over rounds.

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, bail};
use serde::Serialize;
use wavry_netns::{Options, Role, Topology};
use wavry_rift::identity::IdentityKey;

use super::load::{self, CpuProbe, Flows, Load, Shape};
use super::setup::{NsPlace, RelayOptions, RelayProcess};
use super::{
    Args, Figures, Fwd, Round, admit_flows, forwarders, progress, ratio_spread, register_naive,
};
use crate::spread::Spread;

/// The relay's HTTP port inside the namespace.
const HTTP_PORT: u16 = 9191;
/// The naive forwarder's port.
const NAIVE_PORT: u16 = 3999;

/// Medians over rounds of one shape.
#[derive(Debug, Serialize)]
struct NsRatios {
    shape: Shape,
    xdp_vs_naive: Spread,
    xdp_vs_uring: Spread,
}

#[derive(Debug, Serialize)]
struct NsReport {
    topology: &'static str,
    size: usize,
    sessions: usize,
    gso_segments: usize,
    relay_cpus: Vec<usize>,
    xdp_mode: String,
    rounds: Vec<Round>,
    ratios: Vec<NsRatios>,
}

/// Parses "1" or "1,3" or "2-3" into CPU numbers.
fn parse_cpus(text: &str) -> anyhow::Result<Vec<usize>> {
    let mut out = Vec::new();
    for part in text.split(',').filter(|p| !p.trim().is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => out.extend(a.trim().parse::<usize>()?..=b.trim().parse::<usize>()?),
            None => out.push(part.trim().parse()?),
        }
    }
    if out.is_empty() {
        bail!("--relay-cpus is empty");
    }
    Ok(out)
}

fn join(cpus: &[usize]) -> String {
    cpus.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

pub(crate) fn run(args: &Args, bin: &Path) -> anyhow::Result<()> {
    if !wavry_netns::has_root() {
        bail!("--topology netns needs root and iproute2 (namespaces, veth, XDP)");
    }
    let (rounds, seconds, sessions) = if args.quick {
        (1, 0.3, 8)
    } else {
        (args.rounds, args.seconds, args.sessions.max(1))
    };
    let ncpu = std::thread::available_parallelism().map_or(1, usize::from);
    let relay_cpus = match &args.relay_cpus {
        Some(t) => parse_cpus(t)?,
        None => vec![ncpu.saturating_sub(1)],
    };
    let others: Vec<usize> = (0..ncpu).filter(|c| !relay_cpus.contains(c)).collect();
    if others.is_empty() {
        bail!("--relay-cpus leaves no CPU for the senders and the receiver");
    }
    let relay_cpus: &'static [usize] = Box::leak(relay_cpus.into_boxed_slice());
    // This thread and everything it starts stay off the relay's CPUs.
    wavry_netns::pin(0, &others).context("pinning the bench off the relay CPUs")?;
    let topo = Topology::new(Options {
        gro: true,
        threaded_napi: true,
        ..Options::default()
    })
    .context("building the namespaces")?;
    for role in Role::ALL {
        let cpus = if role == Role::Relay {
            relay_cpus
        } else {
            &others[..]
        };
        for pid in topo.napi_threads(role) {
            wavry_netns::pin(pid, cpus).with_context(|| format!("pinning napi thread {pid}"))?;
        }
    }
    let sender_side = IpAddr::V4(topo.relay_ip_sender_side);
    let receiver_side = IpAddr::V4(topo.relay_ip_receiver_side);
    let flows = Flows::in_namespaces(sessions, &topo.sender_ns, &topo.receiver_ns)?;
    let keys = [IdentityKey::generate()?, IdentityKey::generate()?];
    let naive_sock =
        wavry_netns::enter_namespace(&topo.relay_ns, || UdpSocket::bind(("0.0.0.0", NAIVE_PORT)))??;
    let naive = forwarders::naive_on(naive_sock, Some(relay_cpus))?;
    register_naive(
        &flows,
        SocketAddr::new(sender_side, NAIVE_PORT),
        SocketAddr::new(receiver_side, NAIVE_PORT),
    )?;
    let _ = naive.addr;
    eprintln!(
        "relay bench (netns {}): {rounds} round(s) x {seconds} s, {sessions} sessions, {} B, relay CPUs {:?}, others {:?}",
        topo.tag, args.size, relay_cpus, others
    );
    let base = Load {
        shape: Shape::Single,
        rate: None,
        seconds,
        size: args.size,
        segments: args.gso_segments.max(1),
        junk: None,
    };
    let probe = CpuProbe::Cpus(relay_cpus);
    let mut report = NsReport {
        topology: "netns",
        size: args.size,
        sessions,
        gso_segments: base.segments,
        relay_cpus: relay_cpus.to_vec(),
        xdp_mode: String::new(),
        rounds: Vec::new(),
        ratios: Vec::new(),
    };
    let mut port = 4000u16;
    for r in 1..=rounds {
        let mut round = Round {
            index: r,
            saturation: Vec::new(),
            latency: Vec::new(),
            junk: None,
            junk_prefix: None,
        };
        let mut half = None;
        for (fwd, io) in [(Fwd::Relay, "uring"), (Fwd::Xdp, "xdp")] {
            port += 2;
            load::settle(
                &flows.receiver,
                Duration::from_millis(200),
                Duration::from_secs(10),
            )?;
            let place = NsPlace {
                ns: topo.relay_ns.clone(),
                cpus: join(relay_cpus),
                listen: SocketAddr::from(([0, 0, 0, 0], port)),
                public: SocketAddr::new(sender_side, port),
                xdp_iface: if io == "xdp" {
                    vec![
                        topo.relay_if_sender_side.clone(),
                        topo.relay_if_receiver_side.clone(),
                    ]
                } else {
                    Vec::new()
                },
                http_port: HTTP_PORT,
            };
            let relay = RelayProcess::start(&RelayOptions {
                bin: bin.to_path_buf(),
                threads: 1,
                io: io.into(),
                max_sessions: sessions * 2 + 16,
                kernel_filter: "bound-peers",
                place: Some(place),
            })
            .with_context(|| format!("starting the relay with --io {io}"))?;
            admit_flows(
                &relay,
                &flows,
                &keys,
                Some((
                    SocketAddr::new(sender_side, port),
                    SocketAddr::new(receiver_side, port),
                )),
            )?;
            let target = SocketAddr::new(sender_side, port);
            let mut single = 0.0;
            for shape in [Shape::Single, Shape::Gso] {
                let o = load::measure(&flows, target, probe, Load { shape, ..base }, None)?;
                let f = Figures::of(fwd, shape, args.size, &o);
                progress(r, rounds, "saturation", &f);
                if shape == Shape::Single {
                    single = f.pps;
                }
                round.saturation.push(f);
            }
            // Both relays are measured at half the io_uring relay's saturation rate.
            let rate = *half.get_or_insert((single / 2.0).max(1000.0));
            let o = load::measure(
                &flows,
                target,
                probe,
                Load {
                    rate: Some(rate),
                    ..base
                },
                None,
            )?;
            let f = Figures::of(fwd, Shape::Single, args.size, &o);
            progress(r, rounds, "half-rate", &f);
            round.latency.push(f);
            if io == "xdp" && report.xdp_mode.is_empty() {
                report.xdp_mode = "copy (veth has no zero-copy AF_XDP)".into();
            }
        }
        for shape in [Shape::Single, Shape::Gso] {
            let o = load::measure(
                &flows,
                SocketAddr::new(sender_side, NAIVE_PORT),
                probe,
                Load { shape, ..base },
                None,
            )?;
            let f = Figures::of(Fwd::Naive, shape, args.size, &o);
            progress(r, rounds, "saturation", &f);
            round.saturation.push(f);
        }
        report.rounds.push(round);
    }
    drop(naive);
    for shape in [Shape::Single, Shape::Gso] {
        if let (Some(n), Some(u)) = (
            ratio_spread(&report.rounds, shape, Fwd::Xdp, Fwd::Naive),
            ratio_spread(&report.rounds, shape, Fwd::Xdp, Fwd::Relay),
        ) {
            report.ratios.push(NsRatios {
                shape,
                xdp_vs_naive: n,
                xdp_vs_uring: u,
            });
        }
    }
    print_report(&report);
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_vec_pretty(&report)?)
            .with_context(|| format!("writing {}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

fn print_report(rep: &NsReport) {
    println!(
        "\n## wavry-bench relay --topology netns ({} B, {} sessions, relay CPUs {:?}, AF_XDP {})\n",
        rep.size, rep.sessions, rep.relay_cpus, rep.xdp_mode
    );
    println!(
        "| round | forwarder | shape | pps | packets per relay-CPU-second | loss | p50 / p99 us |"
    );
    println!("|---|---|---|---|---|---|---|");
    for r in &rep.rounds {
        for f in r.saturation.iter().chain(&r.latency) {
            println!(
                "| {} | {} | {}{} | {:.0} | {:.0} | {:.2} % | {:.0} / {:.0} |",
                r.index,
                fwd_name(f.forwarder),
                f.shape.name(),
                if r.latency.iter().any(|l| std::ptr::eq(l, f)) {
                    " (half rate)"
                } else {
                    ""
                },
                f.pps,
                f.packets_per_cpu_s,
                f.loss_pct,
                f.p50_us,
                f.p99_us
            );
        }
    }
    println!("\n| shape | XDP / naive (min/median/max) | XDP / io_uring relay |");
    println!("|---|---|---|");
    for row in &rep.ratios {
        println!(
            "| {} | {} | {} |",
            row.shape.name(),
            row.xdp_vs_naive.ratios(),
            row.xdp_vs_uring.ratios()
        );
    }
    let p99 = |fwd: Fwd| {
        Spread::of(
            rep.rounds
                .iter()
                .filter_map(|r| r.latency.iter().find(|f| f.forwarder == fwd))
                .map(|f| f.p99_us),
        )
    };
    if let (Some(x), Some(u)) = (p99(Fwd::Xdp), p99(Fwd::Relay)) {
        println!(
            "\nadded latency p99 at half the io_uring relay's saturation (us, min/median/max): XDP {}, io_uring {}",
            x.show(0),
            u.show(0)
        );
    }
}

fn fwd_name(f: Fwd) -> &'static str {
    match f {
        Fwd::Xdp => "relay (xdp)",
        Fwd::Relay => "relay (io_uring)",
        Fwd::Naive => "naive",
        Fwd::Ceiling => "ceiling",
        Fwd::Direct => "direct",
    }
}
