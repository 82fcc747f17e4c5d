//! The same seed and the same calls give identical results, independent of how often the
//! driver polls; a different seed gives different results.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::{Flow, a, b, run, secs};
use wavry_netsim::{LinkConfig, LossModel, Netsim, Rate};

const MS: Duration = Duration::from_millis(1);

type Trace = Vec<(Duration, SocketAddr, SocketAddr, Vec<u8>)>;

fn impaired() -> LinkConfig {
    LinkConfig::default()
        .with_delay(15 * MS)
        .with_jitter(8 * MS)
        .with_loss(LossModel::bursty(0.03, 3.0))
        .with_duplicate(0.02)
        .with_reorder(0.02)
        .with_corrupt(0.01)
        .with_rate(Rate::mbps(8))
        .with_queue_limit_bytes(30_000)
}

fn flows(t0: Instant) -> [Flow; 2] {
    [
        Flow::cbr(a(), b(), 1200, 9_000_000, t0),
        Flow::cbr(b(), a(), 200, 500_000, t0 + Duration::from_micros(333)),
    ]
}

/// Event-driven run: polls exactly at each delivery time.
fn event_driven(seed: u64) -> (Trace, Netsim) {
    let t0 = Instant::now();
    let mut sim = Netsim::new(seed, t0);
    sim.add_path(a(), b(), impaired()).unwrap();
    let mut flows = flows(t0);
    let mut trace = Trace::new();
    run(&mut sim, &mut flows, secs(t0, 3.0), |d| {
        trace.push((d.at - t0, d.from, d.to, d.data.clone()));
    });
    sim.set_rate(secs(t0, 3.0), a(), b(), Some(Rate::mbps(2)))
        .unwrap();
    run(&mut sim, &mut flows, secs(t0, 5.0), |d| {
        trace.push((d.at - t0, d.from, d.to, d.data.clone()));
    });
    (trace, sim)
}

fn counters(sim: &Netsim, from: SocketAddr, to: SocketAddr) -> [u64; 8] {
    let s = sim.stats(from, to).unwrap();
    [
        s.sent,
        s.delivered,
        s.dropped_loss,
        s.dropped_queue,
        s.duplicated,
        s.corrupted,
        s.reordered,
        s.bytes_delivered,
    ]
}

#[test]
fn same_seed_same_trace() {
    let (t1, s1) = event_driven(1234);
    let (t2, s2) = event_driven(1234);
    assert!(t1.len() > 3000);
    assert_eq!(t1, t2);
    for (f, t) in [(a(), b()), (b(), a())] {
        assert_eq!(counters(&s1, f, t), counters(&s2, f, t));
        let every = |s: &Netsim| s.stats(f, t).unwrap().samples().collect::<Vec<_>>();
        assert_eq!(every(&s1).len(), every(&s2).len());
    }
    // Every impairment actually fired, so the comparison covers all of them.
    let c = counters(&s1, a(), b());
    assert!(c[2..7].iter().all(|&n| n > 0), "{c:?}");
}

#[test]
fn different_seed_different_trace() {
    let (t1, _) = event_driven(1);
    let (t2, _) = event_driven(2);
    assert_ne!(t1, t2);
}

#[test]
fn polling_granularity_does_not_change_results() {
    let (reference, ref_sim) = event_driven(77);

    // Same sends at the same instants, but deliveries are only polled on a coarse 7 ms tick,
    // and the rate change is not preceded by a poll.
    let t0 = Instant::now();
    let mut sim = Netsim::new(77, t0);
    sim.add_path(a(), b(), impaired()).unwrap();
    let mut flows = flows(t0);
    let mut trace = Trace::new();
    let (change, end) = (secs(t0, 3.0), secs(t0, 5.0));
    let mut rate_changed = false;
    let mut next_poll = t0 + 7 * MS;
    loop {
        let next_send = flows.iter().map(|f| f.next).filter(|&t| t < end).min();
        if !rate_changed && next_send.is_none_or(|s| s >= change) {
            sim.set_rate(change, a(), b(), Some(Rate::mbps(2))).unwrap();
            rate_changed = true;
        } else if let Some(s) = next_send.filter(|&s| s < next_poll) {
            for f in flows.iter_mut().filter(|f| f.next == s) {
                f.send_next(&mut sim);
            }
        } else {
            for d in std::iter::from_fn(|| sim.poll_delivery(next_poll)) {
                trace.push((d.at - t0, d.from, d.to, d.data));
            }
            if next_poll == end {
                break;
            }
            next_poll = (next_poll + 7 * MS).min(end);
        }
    }
    assert_eq!(trace.len(), reference.len());
    assert_eq!(trace, reference);
    assert_eq!(counters(&sim, a(), b()), counters(&ref_sim, a(), b()));
}

#[test]
fn unknown_link_is_counted_not_fatal() {
    let t0 = Instant::now();
    let mut sim = Netsim::new(1, t0);
    sim.add_link(a(), b(), LinkConfig::default()).unwrap();
    assert_eq!(
        sim.send(t0, b(), a(), b"no way back"),
        wavry_netsim::SendOutcome::Unroutable
    );
    assert_eq!(sim.unroutable(), 1);
    assert_eq!(sim.next_event_time(), None);
    assert!(sim.set_rate(t0, b(), a(), None).is_err());
    assert!(sim.stats(b(), a()).is_none());
}
