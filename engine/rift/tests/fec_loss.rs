//! Video under loss: 60 fps, 20 Mbit/s, 40 ms RTT, each frame due one frame interval +
//! RTT/2 + 15 ms after it is sent. Reed-Solomon parity, sized from measured loss, carries the
//! load (a NACK round trip cannot beat that deadline at this RTT).

mod support;

use std::time::Duration;

use support::{Pair, link as path, stream::stream};
use wavry_netsim::LinkConfig;

const RTT: Duration = Duration::from_millis(40);

fn link(loss: f64, burst: f64) -> LinkConfig {
    path(RTT / 2, loss, burst)
}

fn run(seed: u64, loss: f64, burst: f64, seconds: u64) -> support::stream::StreamResult {
    let mut p = Pair::new(seed, link(loss, burst), link(loss, burst));
    let r = stream(&mut p, seconds, 60, 20_000_000, RTT);
    println!(
        "loss {loss} burst {burst}: {}/{} on time ({:.4}), fec overhead {:.3}, recovered {}, retransmitted {}, measured loss {:.4}",
        r.on_time,
        r.sent,
        r.on_time_ratio(),
        r.fec_overhead(),
        r.fec_recovered,
        r.retransmitted,
        p.down_loss()
    );
    r
}

#[test]
fn no_loss_costs_at_most_five_percent_parity() {
    let r = run(10, 0.0, 0.0, 20);
    assert_eq!(r.on_time, r.sent);
    assert!(r.fec_overhead() <= 0.05, "overhead {:.4}", r.fec_overhead());
}

#[test]
fn one_percent_random_loss_999_permille_on_time() {
    let r = run(11, 0.01, 0.0, 60);
    assert!(r.on_time_ratio() >= 0.999, "{:.4}", r.on_time_ratio());
}

#[test]
fn five_percent_random_loss_99_percent_on_time() {
    let r = run(12, 0.05, 0.0, 60);
    assert!(r.on_time_ratio() >= 0.99, "{:.4}", r.on_time_ratio());
}

#[test]
fn bursty_two_percent_loss_99_percent_on_time() {
    let r = run(13, 0.02, 4.0, 60);
    assert!(r.on_time_ratio() >= 0.99, "{:.4}", r.on_time_ratio());
}

/// A LAN-like path (0.2 ms RTT, no loss): feedback every 5 ms moves DELTA's target while the
/// first keyframe (3x a frame) is still draining, and that must not slow the keyframe below
/// its burst rate: every frame arrives on time and nothing expires unsent at the host.
#[test]
fn a_target_change_mid_keyframe_keeps_its_burst_rate() {
    let rtt = Duration::from_micros(200);
    let mut p = Pair::new(7, path(rtt / 2, 0.0, 0.0), path(rtt / 2, 0.0, 0.0));
    let r = stream(&mut p, 2, 60, 20_000_000, rtt);
    let expired = p.host.as_ref().unwrap().stats().media_expired;
    assert_eq!((r.on_time, r.sent, expired), (r.sent, 120, 0));
}
