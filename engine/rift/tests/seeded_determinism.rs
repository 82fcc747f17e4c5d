//! Randomness injected from a seed makes a netsim run byte-for-byte reproducible: handshake
//! ids, ephemeral keys, cookie secrets and ids in messages all come from the seed. The same
//! seed gives the identical transcript of every datagram; another seed a different one.

mod support;

use std::time::Duration;

use support::{endpoint::EndpointNet, spoof};
use wavry_netsim::{LinkConfig, LossModel};
use wavry_rift::{
    rng::Rng,
    session::{EndpointConfig, FrameMeta},
};

fn transcript(seed: u64) -> Vec<u8> {
    let link = LinkConfig::default()
        .with_delay(Duration::from_millis(15))
        .with_loss(LossModel::Bernoulli(0.05));
    let mut n = EndpointNet::new(3, 2, &link, EndpointConfig::new(4), Some(seed));
    n.transcript = Some(Vec::new());
    // A short spoofed burst puts the host in cookie mode for the clients' first messages.
    let mut rng = Rng::new(Some(seed));
    for k in 0..300u64 {
        let (from, d) = spoof::first_message(&mut rng, false);
        n.injections
            .push_back((n.start + Duration::from_micros(20 * k), from, d));
    }
    n.run_for(Duration::from_secs(1));
    let hosts = n.host_connected();
    assert_eq!(hosts.len(), 2, "both clients connect");
    for (i, h) in hosts.iter().enumerate() {
        let now = n.now;
        let frame = vec![i as u8 + 1; 20_000];
        let meta = FrameMeta {
            keyframe: true,
            ..FrameMeta::default()
        };
        n.ep.session_mut(*h)
            .unwrap()
            .send_frame(now, &frame, meta, Duration::from_millis(16))
            .unwrap();
    }
    n.run_for(Duration::from_millis(500));
    assert!(n.ep.stats().cookies_sent > 0);
    n.transcript.take().unwrap()
}

#[test]
fn same_seed_same_bytes_other_seed_other_bytes() {
    let a = transcript(11);
    let b = transcript(11);
    assert!(a.len() > 50_000, "{}", a.len());
    assert!(a == b, "two runs with seed 11 differ");
    assert!(transcript(12) != a);
}
