//! DELTA behind a shallow buffer: 20 Mbit/s offered into a 10 Mbit/s link that queues at most
//! 20 kB (16 ms, about DELTA's own 15 ms delay limit; a policer or a relay's hard limit
//! behaves alike). The excess is dropped before the queueing delay says anything, so only the
//! loss the receiver reports can tell the sender. Deterministic (seeded netsim). Asserted over
//! [5 s, 10 s): loss under 8 % with the link at least 85 % used. Without the loss response the
//! same run lost 67 % of what it sent.

mod support;

use std::time::{Duration, Instant};

use support::{Pair, encoder::FollowingEncoder, link};
use wavry_netsim::Rate;
use wavry_rift::{
    cc::DeltaConfig,
    crypto::PeerPolicy,
    session::{Role, SessionConfig},
};

const FPS: u32 = 60;

#[test]
fn loss_without_delay_brings_the_rate_under_a_policer() {
    let down = link(Duration::from_millis(20), 0.0, 0.0)
        .with_rate(Rate::mbps(10))
        .with_queue_limit_bytes(20_000);
    let up = link(Duration::from_millis(20), 0.0, 0.0);
    let host_key =
        std::sync::Arc::new(wavry_rift::identity::IdentityKey::from_seed([1; 32]).unwrap());
    let client_key =
        std::sync::Arc::new(wavry_rift::identity::IdentityKey::from_seed([2; 32]).unwrap());
    let mut host_cfg = SessionConfig::new(Role::Host, PeerPolicy::Pinned(client_key.id()));
    host_cfg.cc = DeltaConfig {
        initial_bps: 20_000_000,
        max_bps: 30_000_000,
        ..DeltaConfig::default()
    };
    let client_cfg = SessionConfig::new(Role::Client, PeerPolicy::Pinned(host_key.id()));
    let mut p = Pair::with_configs(11, up, down, client_cfg, host_cfg, client_key, host_key);
    assert!(p.connect(Duration::from_secs(5)));

    let t0 = p.now;
    let mut encoder = FollowingEncoder::new(t0, 20_000_000, FPS);
    let mut drive = |p: &mut Pair, until: Instant| encoder.drive(p, until);
    let s = Duration::from_secs(1);
    drive(&mut p, t0 + 5 * s);
    let counts = |p: &Pair| {
        let l = p.net.stats(p.host_addr, p.client_addr).unwrap();
        (l.sent, l.dropped_queue)
    };
    let (sent0, dropped0) = counts(&p);
    drive(&mut p, t0 + 10 * s);
    let (sent1, dropped1) = counts(&p);
    let loss = (dropped1 - dropped0) as f64 / (sent1 - sent0).max(1) as f64;
    let util = p
        .net
        .stats(p.host_addr, p.client_addr)
        .unwrap()
        .delivered_bps(t0 + 5 * s..t0 + 10 * s)
        / 10e6;
    println!(
        "[5 s, 10 s): loss {:.2} %, utilisation {util:.3}",
        loss * 100.0
    );
    assert!(loss < 0.08, "loss {:.2} %", loss * 100.0);
    assert!(util >= 0.85, "utilisation {util:.3}");
}
