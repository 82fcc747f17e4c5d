//! Unit tests of the net bench's rows, best-round choice and path selection.

use super::{Measured, Row, Spread, best_round, selected_paths};
use crate::net::tests::parse;

/// A measurement of `received` datagrams of 1200 B in `secs`, using `cpu` CPU-seconds.
fn m(received: u64, secs: f64, cpu: f64) -> Measured {
    Measured {
        sent: received,
        received,
        bytes: received * 1200,
        secs,
        cpu_secs: cpu,
        transport_cpu_secs: None,
        sends: None,
    }
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
}

#[test]
fn best_round_is_most_packets_per_cpu_second_not_most_pps() {
    let rounds = [m(1000, 1.0, 0.01), m(1500, 1.0, 0.03), m(900, 1.0, 0.005)];
    let (i, best) = best_round(&rounds).expect("rounds");
    assert_eq!(i, 3);
    assert!(close(best.per_cpu(), 180_000.0));
    assert!(best_round(&[]).is_none());
}

#[test]
fn spread_is_min_median_max() {
    let s = |v: &[f64]| Spread::of(v.iter().copied());
    let spread = |min, median, max| Some(Spread { min, median, max });
    assert_eq!(s(&[]), None);
    assert_eq!(s(&[5.0]), spread(5.0, 5.0, 5.0));
    assert_eq!(s(&[9.0, 1.0, 4.0]), spread(1.0, 4.0, 9.0));
    assert_eq!(s(&[9.0, 1.0, 4.0, 2.0]), spread(1.0, 3.0, 9.0));
    let k = Spread {
        min: 98_123.0,
        median: 120_456.0,
        max: 141_000.0,
    };
    assert_eq!(k.kilo(), "98k/120k/141k");
}

#[test]
fn ratios_compare_best_round_with_best_round() {
    // Baseline: best round 100k pkts/CPU-s (round 2); ceiling: best 1M (round 1).
    let base = [m(50_000, 1.0, 1.0), m(100_000, 1.0, 1.0)];
    let ceil = [m(2_000_000, 2.0, 2.0), m(1_000_000, 1.0, 2.0)];
    let (_, c) = best_round(&ceil).expect("ceil");
    // The path: best round 300k pkts/CPU-s at 600k pps (round 1).
    let mut path = [m(600_000, 1.0, 2.0), m(700_000, 1.0, 3.5)];
    path[0].transport_cpu_secs = Some(1.0);
    // The transport's own best is round 2 (700k pkts per driver-CPU-second).
    path[1].transport_cpu_secs = Some(1.0);
    let row = Row::new("p", &path, &base, c).expect("row");
    assert_eq!(row.best_round, 1);
    assert_eq!(row.received, 600_000);
    assert!(close(row.pps, 600_000.0));
    assert!(close(row.gbit_s, 600_000.0 * 1200.0 * 8.0 / 1e9));
    assert!(close(row.packets_per_cpu_s, 300_000.0));
    assert!(close(row.pps_vs_baseline, 6.0));
    assert!(close(row.cpu_eff_vs_baseline, 3.0));
    assert!(close(row.pps_vs_ceiling, 0.6));
    assert!(close(row.cpu_eff_vs_ceiling, 0.3));
    assert_eq!(row.transport_best_round, Some(2));
    assert_eq!(row.transport_packets_per_cpu_s, Some(700_000.0));
    assert!(close(
        row.transport_cpu_eff_vs_baseline.expect("transport"),
        7.0
    ));
    assert_eq!(
        row.packets_per_cpu_s_spread,
        Spread {
            min: 200_000.0,
            median: 250_000.0,
            max: 300_000.0
        }
    );
    assert_eq!(
        row.transport_packets_per_cpu_s_spread,
        Some(Spread {
            min: 600_000.0,
            median: 650_000.0,
            max: 700_000.0
        })
    );
    let rounds: Vec<_> = row.rounds.iter().map(|r| (r.round, r.received)).collect();
    assert_eq!(rounds, [(1, 600_000), (2, 700_000)]);
    // Round by round: 300k / 50k and 200k / 100k; the driver threads 600k / 50k and
    // 700k / 100k. Best against best (3.0 and 7.0) is neither round's ratio.
    assert_eq!(
        row.cpu_eff_vs_baseline_by_round,
        Spread {
            min: 2.0,
            median: 4.0,
            max: 6.0
        }
    );
    assert_eq!(
        row.transport_cpu_eff_vs_baseline_by_round,
        Some(Spread {
            min: 7.0,
            median: 9.5,
            max: 12.0
        })
    );
    assert_eq!(row.cpu_eff_vs_baseline_by_round.ratios(), "2.00/4.00/6.00");
}

#[test]
fn one_round_is_that_measurement() {
    let only = m(123_000, 1.5, 0.75);
    let row = Row::new("p", &[only], &[only], only).expect("row");
    assert_eq!((row.best_round, row.rounds.len()), (1, 1));
    assert!(close(row.seconds, 1.5) && close(row.cpu_seconds, 0.75));
    assert!(close(row.packets_per_cpu_s, 164_000.0));
    assert!(close(row.cpu_eff_vs_baseline, 1.0) && close(row.pps_vs_ceiling, 1.0));
    assert_eq!(row.transport_packets_per_cpu_s_spread, None);
    assert_eq!(row.transport_best_round, None);
    assert!(close(row.cpu_eff_vs_baseline_by_round.median, 1.0));
    assert!(Row::new("p", &[], &[only], only).is_none());
    assert!(Row::new("p", &[only], &[], only).is_none());
}

#[test]
fn baseline_and_ceiling_are_always_selected_in_table_order() {
    let ids = |argv: &[&str]| -> Vec<&str> {
        selected_paths(&parse(argv).expect("args"))
            .expect("paths")
            .iter()
            .map(|p| p.0)
            .collect()
    };
    assert_eq!(
        ids(&["--paths", "session-uring,std"]),
        ["std", "raw-gso", "session-uring"]
    );
    assert_eq!(ids(&[]).len(), 14);
    assert!(selected_paths(&parse(&["--paths", "nope"]).expect("args")).is_err());
}
