//! The bottleneck queue: throughput is capped at the configured rate, queueing delay is bounded
//! by `queue_limit / rate`, tail drops are counted, and capacity changes (including an outage)
//! take effect on datagrams already queued.

mod common;

use std::time::{Duration, Instant};

use common::{Flow, a, b, run, secs, seq_of};
use wavry_netsim::{LinkConfig, Netsim, Rate, SendOutcome};

const MS: Duration = Duration::from_millis(1);

#[test]
fn overload_delivers_capacity_with_bounded_queue_delay() {
    let t0 = Instant::now();
    let mut sim = Netsim::new(1, t0);
    // 62 500 bytes at 10 Mbit/s is 50 ms of buffer.
    let cfg = LinkConfig::default()
        .with_delay(10 * MS)
        .with_rate(Rate::mbps(10))
        .with_queue_limit_bytes(62_500);
    sim.add_link(a(), b(), cfg).unwrap();
    let mut flows = [Flow::cbr(a(), b(), 1250, 30_000_000, t0)];
    run(&mut sim, &mut flows, secs(t0, 20.0), |_| {});

    let s = sim.stats(a(), b()).unwrap();
    let window = secs(t0, 5.0)..secs(t0, 20.0);
    let bps = s.delivered_bps(window.clone());
    assert!((bps - 10e6).abs() < 0.01 * 10e6, "delivered {bps} bit/s");

    let q = s.queue_delay_summary(window).unwrap();
    assert!(q.max <= 50 * MS, "max queue delay {:?}", q.max);
    assert!(q.p50 >= 45 * MS, "p50 queue delay {:?}", q.p50);
    assert!(q.p95 >= 45 * MS && q.p99 <= 50 * MS);

    // Two thirds of the offered load cannot fit.
    let dropped = s.dropped_queue as f64 / s.sent as f64;
    assert!(
        (dropped - 2.0 / 3.0).abs() < 0.01,
        "tail-drop share {dropped}"
    );
    assert_eq!(s.dropped_loss, 0);
    let queued = flows[0]
        .outcomes
        .iter()
        .filter(|o| **o == SendOutcome::Queued)
        .count();
    assert_eq!(queued as u64, s.sent - s.dropped_queue);
}

#[test]
fn underload_sees_no_queueing() {
    let t0 = Instant::now();
    let mut sim = Netsim::new(1, t0);
    let cfg = LinkConfig::default()
        .with_rate(Rate::mbps(10))
        .with_queue_limit_bytes(62_500);
    sim.add_link(a(), b(), cfg).unwrap();
    let mut flows = [Flow::cbr(a(), b(), 1250, 5_000_000, t0)];
    run(&mut sim, &mut flows, secs(t0, 5.0), |_| {});
    let s = sim.stats(a(), b()).unwrap();
    let q = s.queue_delay_summary(t0..secs(t0, 5.0)).unwrap();
    assert_eq!(q.max, Duration::ZERO);
    assert_eq!(s.dropped_queue, 0);
    let bps = s.delivered_bps(secs(t0, 1.0)..secs(t0, 5.0));
    assert!((bps - 5e6).abs() < 0.01 * 5e6, "delivered {bps} bit/s");
}

#[test]
fn capacity_change_mid_run_takes_effect() {
    let t0 = Instant::now();
    let mut sim = Netsim::new(1, t0);
    // 100 000 bytes: 80 ms at 10 Mbit/s, 160 ms at 5 Mbit/s.
    let cfg = LinkConfig::default()
        .with_delay(20 * MS)
        .with_rate(Rate::mbps(10))
        .with_queue_limit_bytes(100_000);
    sim.add_link(a(), b(), cfg).unwrap();
    let mut flows = [Flow::cbr(a(), b(), 1250, 8_000_000, t0)];

    run(&mut sim, &mut flows, secs(t0, 10.0), |_| {});
    sim.set_rate(secs(t0, 10.0), a(), b(), Some(Rate::mbps(5)))
        .unwrap();
    run(&mut sim, &mut flows, secs(t0, 20.0), |_| {});
    sim.set_rate(secs(t0, 20.0), a(), b(), Some(Rate::mbps(20)))
        .unwrap();
    run(&mut sim, &mut flows, secs(t0, 30.0), |_| {});

    let s = sim.stats(a(), b()).unwrap();
    let near = |x: f64, want: f64| (x - want).abs() < 0.02 * want;
    let before = s.delivered_bps(secs(t0, 2.0)..secs(t0, 10.0));
    let squeezed = s.delivered_bps(secs(t0, 12.0)..secs(t0, 20.0));
    let after = s.delivered_bps(secs(t0, 22.0)..secs(t0, 30.0));
    assert!(near(before, 8e6), "before {before}");
    assert!(near(squeezed, 5e6), "squeezed {squeezed}");
    assert!(near(after, 8e6), "after {after}");

    let q_before = s.queue_delay_quantile(secs(t0, 2.0)..secs(t0, 10.0), 0.95);
    let q_squeezed = s
        .queue_delay_quantile(secs(t0, 12.0)..secs(t0, 20.0), 0.95)
        .unwrap();
    let q_after = s.queue_delay_quantile(secs(t0, 22.0)..secs(t0, 30.0), 0.95);
    assert_eq!(q_before, Some(Duration::ZERO));
    assert!(
        q_squeezed >= 150 * MS && q_squeezed <= 160 * MS,
        "{q_squeezed:?}"
    );
    assert_eq!(q_after, Some(Duration::ZERO));
}

#[test]
fn rate_change_retimes_datagrams_already_queued() {
    let t0 = Instant::now();
    let mut sim = Netsim::new(1, t0);
    // 1250 bytes take 10 ms at 1 Mbit/s and 1 ms at 10 Mbit/s.
    sim.add_link(a(), b(), LinkConfig::default().with_rate(Rate::mbps(1)))
        .unwrap();
    for i in 0..10u8 {
        sim.send(t0, a(), b(), &[i; 1250]);
    }
    assert_eq!(sim.next_event_time(), Some(t0 + 10 * MS));
    // Datagram 0 is on the wire at 5 ms and keeps the old rate; the rest drain 10x faster.
    sim.set_rate(t0 + 5 * MS, a(), b(), Some(Rate::mbps(10)))
        .unwrap();
    let mut got = Vec::new();
    while let Some(t) = sim.next_event_time() {
        let d = sim.poll_delivery(t).unwrap();
        got.push((d.data[0], d.at - t0));
        sim.recycle(d);
    }
    let want: Vec<_> = (0..10u8).map(|i| (i, (10 + u32::from(i)) * MS)).collect();
    assert_eq!(got, want);
}

#[test]
fn zero_rate_outage_queues_then_drains() {
    let t0 = Instant::now();
    let mut sim = Netsim::new(1, t0);
    let cfg = LinkConfig::default()
        .with_rate(Rate::mbps(10))
        .with_queue_limit_bytes(50 * 1250);
    sim.add_link(a(), b(), cfg).unwrap();
    let mut flows = [Flow::cbr(a(), b(), 1250, 5_000_000, t0)];
    let mut max_seq_in_outage = None;
    run(&mut sim, &mut flows, secs(t0, 1.0), |_| {});
    sim.set_rate(secs(t0, 1.0), a(), b(), Some(Rate::bps(0)))
        .unwrap();
    run(&mut sim, &mut flows, secs(t0, 2.0), |d| {
        max_seq_in_outage = Some(seq_of(&d.data));
    });
    assert_eq!(max_seq_in_outage, None, "nothing crosses a dead link");
    assert_eq!(
        sim.next_event_time(),
        None,
        "queued datagrams have no delivery time"
    );
    // 500 datagrams offered during the outage, 50 fit in the queue.
    assert_eq!(sim.stats(a(), b()).unwrap().dropped_queue, 450);
    sim.set_rate(secs(t0, 2.0), a(), b(), Some(Rate::mbps(10)))
        .unwrap();
    run(&mut sim, &mut flows, secs(t0, 3.0), |_| {});

    let s = sim.stats(a(), b()).unwrap();
    assert_eq!(s.delivered_in(secs(t0, 1.0)..secs(t0, 2.0)), 0);
    // The 50 held datagrams plus ~50 new ones drain within 100 ms of the restore.
    assert!(s.delivered_in(secs(t0, 2.0)..secs(t0, 2.1)) >= 95);
    let q = s.queue_delay_summary(secs(t0, 2.0)..secs(t0, 2.1)).unwrap();
    assert!(
        q.max >= Duration::from_millis(900),
        "held across the outage: {:?}",
        q.max
    );
}
