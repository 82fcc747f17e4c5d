//! The simulator is cheap enough for long scenarios: 100+ simulated seconds of a 20 Mbit/s flow
//! of 1200-byte datagrams (about 210 000 datagrams) run as part of the ordinary test suite, and
//! steady state reuses pooled buffers instead of allocating.

mod common;

use std::time::{Duration, Instant};

use common::{Flow, a, b, run, secs};
use wavry_netsim::{LinkConfig, LossModel, Netsim, Rate};

#[test]
fn hundred_seconds_of_twenty_megabits() {
    let t0 = Instant::now();
    let mut sim = Netsim::new(2024, t0);
    let cfg = LinkConfig::default()
        .with_delay(Duration::from_millis(20))
        .with_jitter(Duration::from_millis(2))
        .with_loss(LossModel::Bernoulli(0.01))
        .with_rate(Rate::mbps(25))
        .with_queue_limit_bytes(64 * 1024);
    sim.add_link(a(), b(), cfg).unwrap();
    let mut flows = [Flow::cbr(a(), b(), 1200, 20_000_000, t0)];
    run(&mut sim, &mut flows, secs(t0, 101.0), |_| {});
    run(&mut sim, &mut [], secs(t0, 102.0), |_| {}); // drain the datagrams still in flight

    let s = sim.stats(a(), b()).unwrap();
    // 1200 bytes every 480 µs for 101 s.
    assert_eq!(s.sent, 210_417);
    assert_eq!(s.dropped_queue, 0);
    assert_eq!(s.delivered + s.dropped_loss, s.sent);
    let loss = s.dropped_loss as f64 / s.sent as f64;
    assert!((loss - 0.01).abs() < 0.001, "loss {loss}");
    let bps = s.delivered_bps(secs(t0, 1.0)..secs(t0, 101.0));
    assert!(
        (bps - 19.8e6).abs() < 0.01 * 19.8e6,
        "delivered {bps} bit/s"
    );
    let q = s
        .queue_delay_summary(secs(t0, 1.0)..secs(t0, 101.0))
        .unwrap();
    assert_eq!(
        q.max,
        Duration::ZERO,
        "25 Mbit/s never queues a 20 Mbit/s CBR flow"
    );
    assert_eq!(sim.in_flight(), 0);
}

#[test]
fn recycled_buffers_are_reused() {
    let t0 = Instant::now();
    let mut sim = Netsim::new(1, t0);
    sim.add_link(a(), b(), LinkConfig::default()).unwrap();
    sim.send(t0, a(), b(), &[1; 1200]);
    assert_eq!(sim.buffer_allocations(), 1);
    let d = sim.poll_delivery(t0).unwrap();
    sim.recycle(d);
    sim.send(t0, a(), b(), &[2; 1000]);
    assert_eq!(
        sim.buffer_allocations(),
        1,
        "the recycled buffer was big enough"
    );
    // A buffer with a recognisable capacity goes round the pool and comes back.
    let d = sim.poll_delivery(t0).unwrap();
    assert_eq!(d.data, vec![2; 1000]);
    sim.recycle_buffer(Vec::with_capacity(4321));
    sim.send(t0, a(), b(), &[3; 10]);
    let d = sim.poll_delivery(t0).unwrap();
    assert_eq!((d.data.capacity(), &d.data[..]), (4321, &[3u8; 10][..]));
}

#[test]
fn steady_state_stops_allocating_payload_buffers() {
    let t0 = Instant::now();
    let mut sim = Netsim::new(3, t0);
    sim.set_record_samples(false);
    let cfg = LinkConfig::default()
        .with_delay(Duration::from_millis(30))
        .with_jitter(Duration::from_millis(5))
        .with_duplicate(0.05)
        .with_rate(Rate::mbps(12))
        .with_queue_limit_bytes(20_000);
    sim.add_path(a(), b(), cfg).unwrap();
    let mut flows = [
        Flow::cbr(a(), b(), 1200, 15_000_000, t0),
        Flow::cbr(b(), a(), 100, 400_000, t0),
    ];
    run(&mut sim, &mut flows, secs(t0, 2.0), |_| {});
    let warm = sim.buffer_allocations();
    let mut delivered = 0usize;
    run(&mut sim, &mut flows, secs(t0, 12.0), |_| delivered += 1);
    let steady = sim.buffer_allocations() - warm;
    assert!(delivered > 10_000);
    assert!(warm < 200, "warm-up allocated {warm} buffers");
    assert!(steady <= 10, "steady state allocated {steady} buffers");
}
