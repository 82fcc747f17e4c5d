//! The text table of `wavry-bench net`: one row per path, its best round, the spread over the
//! rounds, and the encrypted session's transport figures.

use super::{Args, BASELINE, CEILING, Row};
use crate::spread::Spread;

/// Prints the table; with more than one round, the header and footer say "best of N"
/// and a last column holds the min/median/max of packets per CPU-second over the rounds
/// (with one round the output is the single-measurement table, unchanged).
pub(super) fn print_table(args: &Args, rows: &[Row]) {
    let multi = args.rounds > 1;
    let per_path = if multi {
        format!(
            "{:.1} s per path per round, best of {} rounds",
            args.seconds, args.rounds
        )
    } else {
        format!("{:.1} s per path", args.seconds)
    };
    println!(
        "wavry-bench net: {} B datagrams, loopback, {per_path}, sender CPU {} / receiver CPU {}",
        args.size, args.sender_cpu, args.receiver_cpu
    );
    print!(
        "{:<32} {:>10} {:>8} {:>12} {:>6} {:>8} {:>8} {:>8} {:>8}",
        "path", "pps", "Gbit/s", "pkts/CPU-s", "loss%", "xbase", "xbaseCPU", "xceil", "xceilCPU"
    );
    spread_columns(multi, "pkts/CPU-s min/med/max", "xbaseCPU by round");
    for r in rows {
        print!(
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
        spread_columns(
            multi,
            &r.packets_per_cpu_s_spread.kilo(),
            &r.cpu_eff_vs_baseline_by_round.ratios(),
        );
    }
    println!(
        "baseline = {BASELINE}; ceiling = {CEILING}; x* = ratio of pps / packets per CPU-second in this run"
    );
    if multi {
        println!(
            "best of {n} rounds: each row is its path's round with the most packets per CPU-second, and x* compare best with best \
             (other tenants only ever add CPU time or stalls, so the best round is the closest to the path's own cost); \
             min/med/max = packets per CPU-second over the {n} rounds (the noise); xbaseCPU by round = min/median/max over the \
             rounds of the path's packets per CPU-second against the baseline's in the same round",
            n = args.rounds
        );
    }
    print_transport(multi, rows);
}

/// The session rows' transport-only figures (CPU of the two driver threads), if any.
fn print_transport(multi: bool, rows: &[Row]) {
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
    if transport.is_empty() {
        return;
    }
    println!(
        "\nsession rows, CPU of the two driver threads only (the transport; the rows above count the whole process, frame producer and consumer included); dgrams/send = the host's mean GSO batch:"
    );
    if multi {
        println!("(each row: its round with the most packets per driver-CPU-second)");
    }
    print!(
        "{:<40} {:>12} {:>8} {:>11}",
        "path", "pkts/CPU-s", "xbaseCPU", "dgrams/send"
    );
    spread_columns(multi, "pkts/CPU-s min/med/max", "xbaseCPU by round");
    for (r, per_cpu, x) in transport {
        let per_send = r
            .datagrams_per_send
            .map_or_else(|| "-".to_string(), |d| format!("{d:.1}"));
        print!("{:<40} {per_cpu:>12.0} {x:>8.2} {per_send:>11}", r.path);
        let spread = r.transport_packets_per_cpu_s_spread.map(Spread::kilo);
        let by_round = r.transport_cpu_eff_vs_baseline_by_round.map(Spread::ratios);
        spread_columns(
            multi,
            spread.as_deref().unwrap_or("-"),
            by_round.as_deref().unwrap_or("-"),
        );
    }
}

/// Ends a table line, with the spread columns when there is more than one round.
fn spread_columns(multi: bool, spread: &str, by_round: &str) {
    if multi {
        println!(" {spread:>24} {by_round:>18}");
    } else {
        println!();
    }
}
