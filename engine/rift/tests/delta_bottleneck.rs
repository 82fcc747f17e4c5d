//! DELTA behind a bottleneck: 30 Mbit/s offered into 10 Mbit/s (40 ms RTT, 250 ms of queue).
//! The encoder follows the session's target-bitrate events, as the host runtime does.
//! Asserted outcomes: ≥ 85 % utilisation with p95 queueing delay < 25 ms within 5 s; after the
//! capacity doubles, ≥ 80 % of it within 5 s; after it halves, queueing delay < 25 ms within 2 s.

mod support;

use std::time::{Duration, Instant};

use support::{Pair, encoder::FollowingEncoder, link};
use wavry_netsim::Rate;
use wavry_rift::{
    cc::DeltaConfig,
    crypto::PeerPolicy,
    session::{Event, Role, SessionConfig},
};

const FPS: u32 = 60;

struct Phase {
    util: f64,
    p95: Duration,
}

fn measure(p: &Pair, from: Instant, to: Instant, capacity_bps: f64) -> Phase {
    let s = p.net.stats(p.host_addr, p.client_addr).unwrap();
    let util = s.delivered_bps(from..to) / capacity_bps;
    let p95 = s
        .queue_delay_quantile(from..to, 0.95)
        .unwrap_or(Duration::ZERO);
    println!(
        "[{:>5.1}s, {:>5.1}s) utilisation {util:.3}, p95 queue delay {p95:?}",
        (from - p.start).as_secs_f64(),
        (to - p.start).as_secs_f64()
    );
    Phase { util, p95 }
}

#[test]
fn converges_tracks_capacity_and_drains_queues() {
    let queue = 10_000_000 / 8 / 4; // 250 ms at 10 Mbit/s
    let down = link(Duration::from_millis(20), 0.0, 0.0)
        .with_rate(Rate::mbps(10))
        .with_queue_limit_bytes(queue);
    let up = link(Duration::from_millis(20), 0.0, 0.0);
    let host_key =
        std::sync::Arc::new(wavry_rift::identity::IdentityKey::from_seed([1; 32]).unwrap());
    let client_key =
        std::sync::Arc::new(wavry_rift::identity::IdentityKey::from_seed([2; 32]).unwrap());
    let mut host_cfg = SessionConfig::new(Role::Host, PeerPolicy::Pinned(client_key.id()));
    host_cfg.cc = DeltaConfig {
        initial_bps: 30_000_000,
        max_bps: 30_000_000,
        ..DeltaConfig::default()
    };
    let client_cfg = SessionConfig::new(Role::Client, PeerPolicy::Pinned(host_key.id()));
    let mut p = Pair::with_configs(7, up, down, client_cfg, host_cfg, client_key, host_key);
    assert!(p.connect(Duration::from_secs(5)));

    let t0 = p.now;
    let mut encoder = FollowingEncoder::new(t0, 30_000_000, FPS);
    let mut drive = |p: &mut Pair, until: Instant| encoder.drive(p, until);

    let s = Duration::from_secs(1);
    drive(&mut p, t0 + 10 * s);
    let first = measure(&p, t0 + 5 * s, t0 + 10 * s, 10e6);
    p.net
        .set_rate(p.now, p.host_addr, p.client_addr, Some(Rate::mbps(20)))
        .unwrap();
    drive(&mut p, t0 + 20 * s);
    let doubled = measure(&p, t0 + 15 * s, t0 + 20 * s, 20e6);
    p.net
        .set_rate(p.now, p.host_addr, p.client_addr, Some(Rate::mbps(10)))
        .unwrap();
    drive(&mut p, t0 + 26 * s);
    let halved = measure(&p, t0 + 22 * s, t0 + 26 * s, 10e6);
    let _ = measure(&p, t0 + 20 * s, t0 + 22 * s, 10e6);

    let mut last_print = t0;
    for (t, e) in &p.host_events {
        if let Event::TargetBitrate { bps, fps } = e {
            if *t >= last_print + Duration::from_millis(100) && std::env::var("DELTA_TRACE").is_ok()
            {
                println!(
                    "{:>6.2}s target {:>6.2} Mbit/s fps {fps}",
                    (*t - p.start).as_secs_f64(),
                    *bps as f64 / 1e6
                );
                last_print = *t;
            }
        }
    }
    assert!(first.util >= 0.85, "utilisation {:.3}", first.util);
    assert!(first.p95 < Duration::from_millis(25), "p95 {:?}", first.p95);
    assert!(
        doubled.util >= 0.80,
        "utilisation after doubling {:.3}",
        doubled.util
    );
    assert!(
        halved.p95 < Duration::from_millis(25),
        "p95 after halving {:?}",
        halved.p95
    );
}
