//! Random loss converges to the configured means: Bernoulli rate, Gilbert–Elliott stationary
//! loss and mean burst length.

mod common;

use std::time::{Duration, Instant};

use common::{a, b};
use wavry_netsim::{LinkConfig, LossModel, Netsim, SendOutcome};

/// Sends `n` datagrams 1 µs apart on an otherwise ideal link and returns each one's fate
/// (`true` = lost), draining deliveries as it goes.
fn fates(seed: u64, cfg: LinkConfig, n: usize) -> (Netsim, Vec<bool>) {
    let t0 = Instant::now();
    let mut sim = Netsim::new(seed, t0);
    sim.set_record_samples(false);
    sim.add_link(a(), b(), cfg).unwrap();
    let mut lost = Vec::with_capacity(n);
    for i in 0..n {
        let now = t0 + Duration::from_micros(i as u64);
        match sim.send(now, a(), b(), &[0u8; 64]) {
            SendOutcome::DroppedLoss => lost.push(true),
            SendOutcome::Queued => lost.push(false),
            other => panic!("unexpected {other:?}"),
        }
        sim.deliver_due(now, |_| {});
    }
    (sim, lost)
}

fn burst_lengths(lost: &[bool]) -> Vec<usize> {
    lost.chunk_by(|x, y| x == y)
        .filter(|run| run[0])
        .map(<[bool]>::len)
        .collect()
}

#[test]
fn bernoulli_loss_rate_converges() {
    let n = 200_000;
    let (sim, lost) = fates(
        1,
        LinkConfig::default().with_loss(LossModel::Bernoulli(0.1)),
        n,
    );
    let rate = lost.iter().filter(|&&l| l).count() as f64 / n as f64;
    assert!((rate - 0.1).abs() < 0.003, "loss rate {rate}");
    let s = sim.stats(a(), b()).unwrap();
    assert_eq!(s.sent, n as u64);
    assert_eq!(s.dropped_loss + s.delivered, n as u64);
    // Independent losses: mean burst length 1 / (1 - p).
    let bursts = burst_lengths(&lost);
    let mean = bursts.iter().sum::<usize>() as f64 / bursts.len() as f64;
    assert!((mean - 1.0 / 0.9).abs() < 0.03, "mean burst {mean}");
}

#[test]
fn bursty_loss_hits_mean_and_burst_length() {
    let n = 200_000;
    let model = LossModel::bursty(0.05, 4.0);
    let (sim, lost) = fates(2, LinkConfig::default().with_loss(model), n);
    let rate = lost.iter().filter(|&&l| l).count() as f64 / n as f64;
    assert!((rate - 0.05).abs() < 0.005, "loss rate {rate}");
    let bursts = burst_lengths(&lost);
    let mean = bursts.iter().sum::<usize>() as f64 / bursts.len() as f64;
    assert!((mean - 4.0).abs() < 0.3, "mean burst {mean}");
    assert_eq!(
        sim.stats(a(), b()).unwrap().dropped_loss,
        lost.iter().filter(|&&l| l).count() as u64
    );
}

#[test]
fn general_gilbert_elliott_matches_stationary_mean() {
    let model = LossModel::GilbertElliott {
        p_gb: 0.01,
        p_bg: 0.1,
        loss_good: 0.01,
        loss_bad: 0.5,
    };
    let expected = model.mean_loss();
    assert!((expected - (0.1 / 0.11 * 0.01 + 0.01 / 0.11 * 0.5)).abs() < 1e-12);
    let n = 200_000;
    let (_, lost) = fates(3, LinkConfig::default().with_loss(model), n);
    let rate = lost.iter().filter(|&&l| l).count() as f64 / n as f64;
    assert!(
        (rate - expected).abs() < 0.005,
        "loss rate {rate} vs {expected}"
    );
}

#[test]
fn loss_pattern_does_not_depend_on_other_impairments() {
    let base = LinkConfig::default().with_loss(LossModel::bursty(0.1, 3.0));
    let (_, plain) = fates(9, base.clone(), 20_000);
    let (_, noisy) = fates(
        9,
        base.with_duplicate(0.3)
            .with_corrupt(0.3)
            .with_reorder(0.3)
            .with_jitter(Duration::from_millis(5)),
        20_000,
    );
    assert_eq!(plain, noisy);
}
