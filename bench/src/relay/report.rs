//! What `wavry-bench relay` derives from its rounds and prints: same-round ratios, the added
//! latency, the relay's own p99 from its histogram, progress lines and the final tables.

use super::load::Shape;
use super::{AddedLatency, Figures, Fwd, Report, Round};
use crate::spread::Spread;

/// Per round, `num`'s packets per forwarder CPU-second over `den`'s in `shape` saturation
/// runs; min/median/max over the rounds.
pub(super) fn ratio_spread(rounds: &[Round], shape: Shape, num: Fwd, den: Fwd) -> Option<Spread> {
    let per = |fwd: Fwd, r: &Round| {
        r.saturation
            .iter()
            .find(|f| f.forwarder == fwd && f.shape == shape)
            .map_or(0.0, |f| f.packets_per_cpu_s)
    };
    Spread::of(rounds.iter().map(|r| {
        let d = per(den, r);
        if d > 0.0 { per(num, r) / d } else { 0.0 }
    }))
}

/// The upper bound (µs) of the bucket that holds the 99th percentile of what the cumulative
/// histogram gained between `before` and `after`; `None` without observations.
pub(super) fn p99_upper_bound(before: &[(f64, u64)], after: &[(f64, u64)]) -> Option<f64> {
    let gained: Vec<(f64, u64)> = after
        .iter()
        .map(|&(le, n)| {
            let was = before
                .iter()
                .find(|b| b.0.total_cmp(&le).is_eq())
                .map_or(0, |b| b.1);
            (le, n.saturating_sub(was))
        })
        .collect();
    let total = gained.last()?.1;
    if total == 0 {
        return None;
    }
    let need = (total as f64 * 0.99).ceil() as u64;
    gained
        .iter()
        .find(|(_, n)| *n >= need)
        .map(|(le, _)| le * 1e6)
}

/// Per shape, relay minus direct p99 of each round at half saturation; min/median/max.
pub(super) fn added_latency(rounds: &[Round]) -> Vec<AddedLatency> {
    let mut out = Vec::new();
    for shape in [Shape::Single, Shape::Gso] {
        let per = |r: &Round, g: fn(&Figures) -> f64| {
            let at = |fwd: Fwd| {
                r.latency
                    .iter()
                    .find(|f| f.forwarder == fwd && f.shape == shape)
                    .map(g)
            };
            Some(at(Fwd::Relay)? - at(Fwd::Direct)?)
        };
        if let (Some(p99_us), Some(socket_p99_us)) = (
            Spread::of(rounds.iter().filter_map(|r| per(r, |f| f.p99_us))),
            Spread::of(rounds.iter().filter_map(|r| per(r, |f| f.socket_p99_us))),
        ) {
            out.push(AddedLatency {
                shape,
                p99_us,
                socket_p99_us,
            });
        }
    }
    out
}

pub(super) fn progress(r: u32, rounds: u32, what: &str, f: &Figures) {
    eprintln!(
        "round {r}/{rounds} {what:<10} {:<6} {:<7}: {:>9.0} pps {:>6.2} Gbit/s, {:>9.0} pkts/CPU-s, loss {:.2}%, p50/p99/p999 {:.0}/{:.0}/{:.0} us{}",
        f.shape.name(),
        format!("{:?}", f.forwarder).to_lowercase(),
        f.pps,
        f.gbit_s,
        f.packets_per_cpu_s,
        f.loss_pct,
        f.p50_us,
        f.p99_us,
        f.p999_us,
        if f.junk_sent > 0 {
            format!(", junk sent {}", f.junk_sent)
        } else {
            String::new()
        }
    );
}

pub(super) fn print_report(rep: &Report) {
    println!(
        "\nwavry-bench relay: {} B datagrams, {} sessions, GSO {} segments, relay --threads {} --io {}; {} round(s): min/median/max over rounds",
        rep.size,
        rep.sessions,
        rep.gso_segments,
        rep.relay_threads,
        rep.relay_io,
        rep.rounds.len()
    );
    println!(
        "{:<7} {:<8} {:>26} {:>24} {:>18}",
        "shape", "path", "forwarded kpps", "kpkts per CPU-s", "loss %"
    );
    for shape in [Shape::Single, Shape::Gso] {
        for fwd in [Fwd::Ceiling, Fwd::Naive, Fwd::Relay] {
            let rows: Vec<&Figures> = rep
                .rounds
                .iter()
                .flat_map(|r| &r.saturation)
                .filter(|f| f.forwarder == fwd && f.shape == shape)
                .collect();
            let s = |g: fn(&Figures) -> f64| Spread::of(rows.iter().map(|f| g(f)));
            if let (Some(p), Some(c), Some(l)) = (
                s(|f| f.pps / 1e3),
                s(|f| f.packets_per_cpu_s / 1e3),
                s(|f| f.loss_pct),
            ) {
                println!(
                    "{:<7} {:<8} {:>26} {:>24} {:>18}",
                    shape.name(),
                    format!("{fwd:?}").to_lowercase(),
                    p.show(0),
                    c.show(0),
                    l.show(2)
                );
            }
        }
    }
    println!("\nheadline (packets per forwarder CPU-second, same-round ratios, min/median/max):");
    for r in &rep.ratios {
        println!(
            "  {:<7} relay/ceiling {}   relay/naive {}",
            r.shape.name(),
            r.relay_vs_ceiling.show(2),
            r.relay_vs_naive.show(2)
        );
    }
    println!("\nat half the relay's saturation rate (one-way latency, us; loss %):");
    for shape in [Shape::Single, Shape::Gso] {
        for fwd in [Fwd::Direct, Fwd::Relay] {
            let rows: Vec<&Figures> = rep
                .rounds
                .iter()
                .flat_map(|r| &r.latency)
                .filter(|f| f.forwarder == fwd && f.shape == shape)
                .collect();
            let s = |g: fn(&Figures) -> f64| Spread::of(rows.iter().map(|f| g(f)));
            if let (Some(rate), Some(a), Some(b), Some(c), Some(l)) = (
                s(|f| f.sent as f64),
                s(|f| f.p50_us),
                s(|f| f.p99_us),
                s(|f| f.p999_us),
                s(|f| f.loss_pct),
            ) {
                println!(
                    "  {:<7} {:<7} sent {:>10.0}  p50 {:<16} p99 {:<18} p999 {:<20} loss {}",
                    shape.name(),
                    format!("{fwd:?}").to_lowercase(),
                    rate.median,
                    a.show(0),
                    b.show(0),
                    c.show(0),
                    l.show(2)
                );
            }
            if let (Some(a), Some(b), Some(c)) = (
                s(|f| f.socket_p50_us),
                s(|f| f.socket_p99_us),
                s(|f| f.socket_p999_us),
            ) {
                println!(
                    "  {:<15} to socket   p50 {:<16} p99 {:<18} p999 {}",
                    "",
                    a.show(0),
                    b.show(0),
                    c.show(0)
                );
            }
        }
    }
    for shape in [Shape::Single, Shape::Gso] {
        let inside = Spread::of(rep.rounds.iter().flat_map(|r| &r.latency).filter_map(|f| {
            (f.forwarder == Fwd::Relay && f.shape == shape)
                .then_some(f.inside_p99_us)
                .flatten()
        }));
        if let Some(i) = inside {
            println!(
                "  {:<7} inside the relay (a batch's receipt to its send submitted; /metrics bucket bound) p99 <= {} us",
                shape.name(),
                i.show(0)
            );
        }
    }
    println!(
        "\nadded by the relay at half saturation (relay - direct p99, same round, us, min/median/max):"
    );
    for a in &rep.added_latency {
        println!(
            "  {:<7} to the receiving thread {:<20} to the receiving socket {}",
            a.shape.name(),
            a.p99_us.show(0),
            a.socket_p99_us.show(0)
        );
    }
    // Valid loss and junk rate of one junk run per round, as spreads.
    let junk = |pick: fn(&Round) -> Option<&Figures>| {
        let runs: Vec<&Figures> = rep.rounds.iter().filter_map(pick).collect();
        Some((
            Spread::of(runs.iter().map(|f| f.loss_pct))?,
            Spread::of(runs.iter().map(|f| f.junk_pps / 1e3))?,
        ))
    };
    if let Some((l, j)) = junk(|r| r.junk.as_ref()) {
        println!(
            "\njunk flood (at the gso saturation rate) beside valid single datagrams at half saturation: valid loss % {}, junk kpps {} (kernel filter: {})",
            l.show(2),
            j.show(0),
            rep.kernel_filter
        );
    }
    if let Some((l, j)) = junk(|r| r.junk_prefix.as_ref()) {
        println!(
            "  same rounds, a second relay with --kernel-filter prefix: valid loss % {}, junk kpps {}",
            l.show(2),
            j.show(0)
        );
    }
    if let Some(c) = &rep.session_count {
        println!(
            "\nsession count: {} sessions, relay RSS {:.1} MiB (empty {:.1} MiB), admitted in {:.1} s, {} forwarded afterwards",
            c.sessions,
            c.rss_after_bytes as f64 / 1_048_576.0,
            c.rss_before_bytes as f64 / 1_048_576.0,
            c.admit_seconds,
            c.forwarded_after
        );
    }
}

#[cfg(test)]
mod tests {
    use super::p99_upper_bound;

    #[test]
    fn p99_comes_from_what_the_histogram_gained_in_the_window() {
        let before = [(20e-6, 1000), (50e-6, 1000), (f64::INFINITY, 1000)];
        let after = [(20e-6, 1090), (50e-6, 1099), (f64::INFINITY, 1100)];
        // 100 new observations: 90 within 20 us, 99 within 50 us.
        assert_eq!(p99_upper_bound(&before, &after), Some(50.0));
        let after = [(20e-6, 1099), (50e-6, 1099), (f64::INFINITY, 1100)];
        assert_eq!(p99_upper_bound(&before, &after), Some(20.0));
        assert_eq!(p99_upper_bound(&before, &before), None);
    }
}
