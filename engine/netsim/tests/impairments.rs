//! Propagation impairments: jitter keeps FIFO order unless reorder fires; reorder, duplicate
//! and corrupt happen at their configured rates.

mod common;

use std::time::{Duration, Instant};

use common::{Flow, a, b, run, secs, sent_of, seq_of};
use wavry_netsim::{LinkConfig, Netsim};

const MS: Duration = Duration::from_millis(1);

#[test]
fn jitter_without_reorder_keeps_fifo_order() {
    let t0 = Instant::now();
    let mut sim = Netsim::new(5, t0);
    let cfg = LinkConfig::default()
        .with_delay(10 * MS)
        .with_jitter(30 * MS);
    sim.add_link(a(), b(), cfg).unwrap();
    // One 125-byte datagram every 5 ms: much closer together than the 30 ms jitter.
    let mut flows = [Flow::cbr(a(), b(), 125, 200_000, t0)];
    let mut seqs = Vec::new();
    let mut one_way = Vec::new();
    run(&mut sim, &mut flows, secs(t0, 5.0), |d| {
        seqs.push(seq_of(&d.data));
        one_way.push((d.at - t0).checked_sub(sent_of(&d.data)).unwrap());
    });
    run(&mut sim, &mut [], secs(t0, 6.0), |d| {
        seqs.push(seq_of(&d.data));
        one_way.push((d.at - t0).checked_sub(sent_of(&d.data)).unwrap());
    });
    assert_eq!(seqs, (0..1000).collect::<Vec<u64>>());
    assert_eq!(sim.stats(a(), b()).unwrap().reordered, 0);
    let (lo, hi) = (
        *one_way.iter().min().unwrap(),
        *one_way.iter().max().unwrap(),
    );
    assert!(
        lo >= 10 * MS && hi <= 40 * MS,
        "one-way delay {lo:?}..{hi:?}"
    );
    // FIFO makes a datagram wait for earlier ones, which skews delays upward, but the spread
    // is still there.
    assert!(
        lo < 15 * MS && hi > 38 * MS,
        "jitter spreads delays: {lo:?}..{hi:?}"
    );
}

#[test]
fn reorder_overtakes_at_configured_rate() {
    let t0 = Instant::now();
    let mut sim = Netsim::new(6, t0);
    let cfg = LinkConfig::default()
        .with_delay(10 * MS)
        .with_jitter(10 * MS)
        .with_reorder(0.05);
    sim.add_link(a(), b(), cfg).unwrap();
    // A datagram every 0.1 ms, so jitter is always holding earlier datagrams back.
    let mut flows = [Flow::cbr(a(), b(), 100, 8_000_000, t0)];
    let mut late = 0u64;
    let mut highest = None;
    run(&mut sim, &mut flows, secs(t0, 4.0), |d| {
        let seq = seq_of(&d.data);
        if highest.is_some_and(|h| seq < h) {
            late += 1;
        }
        highest = highest.max(Some(seq));
    });
    let s = sim.stats(a(), b()).unwrap();
    let share = s.reordered as f64 / s.delivered as f64;
    assert!((share - 0.05).abs() < 0.005, "reordered share {share}");
    assert!(late >= s.reordered, "each overtake leaves a late datagram");
}

#[test]
fn duplicates_at_configured_rate_arrive_back_to_back() {
    let t0 = Instant::now();
    let mut sim = Netsim::new(7, t0);
    let cfg = LinkConfig::default().with_delay(5 * MS).with_duplicate(0.1);
    sim.add_link(a(), b(), cfg).unwrap();
    let mut flows = [Flow::cbr(a(), b(), 100, 8_000_000, t0)];
    let mut seqs = Vec::new();
    run(&mut sim, &mut flows, secs(t0, 2.0), |d| {
        seqs.push(seq_of(&d.data));
    });
    run(&mut sim, &mut [], secs(t0, 3.0), |d| {
        seqs.push(seq_of(&d.data));
    });
    let s = sim.stats(a(), b()).unwrap();
    let share = s.duplicated as f64 / s.sent as f64;
    assert!((share - 0.1).abs() < 0.01, "duplicate share {share}");
    assert_eq!(s.delivered, s.sent + s.duplicated);
    assert_eq!(seqs.len() as u64, s.delivered);
    let pairs = seqs.windows(2).filter(|w| w[0] == w[1]).count() as u64;
    assert_eq!(pairs, s.duplicated);
    assert!(seqs.is_sorted(), "duplicates do not reorder anything");
    assert_eq!(s.reordered, 0);
}

#[test]
fn corruption_flips_exactly_one_bit_at_configured_rate() {
    let t0 = Instant::now();
    let mut sim = Netsim::new(8, t0);
    sim.add_link(a(), b(), LinkConfig::default().with_corrupt(0.02))
        .unwrap();
    let n = 20_000u64;
    let mut corrupted = 0u64;
    for i in 0..n {
        let now = t0 + Duration::from_micros(i);
        let payload = [i as u8; 200];
        sim.send(now, a(), b(), &payload);
        let d = sim.poll_delivery(now).unwrap();
        let flipped: u32 = d
            .data
            .iter()
            .zip(payload)
            .map(|(x, y)| (x ^ y).count_ones())
            .sum();
        assert!(flipped <= 1, "at most one bit flips, got {flipped}");
        corrupted += u64::from(flipped);
        sim.recycle(d);
    }
    assert_eq!(corrupted, sim.stats(a(), b()).unwrap().corrupted);
    let share = corrupted as f64 / n as f64;
    assert!((share - 0.02).abs() < 0.003, "corrupt share {share}");
}

#[test]
fn empty_datagrams_pass_but_cannot_be_corrupted() {
    let t0 = Instant::now();
    let mut sim = Netsim::new(8, t0);
    sim.add_link(a(), b(), LinkConfig::default().with_corrupt(1.0))
        .unwrap();
    sim.send(t0, a(), b(), &[]);
    assert!(sim.poll_delivery(t0).unwrap().data.is_empty());
    assert_eq!(sim.stats(a(), b()).unwrap().corrupted, 0);
}
