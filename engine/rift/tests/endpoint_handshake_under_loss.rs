//! Through a host `Endpoint` (half-open handshakes, anti-amplification budget) the handshake
//! still completes under 30 % loss in both directions, for every seed: msg2 is re-sent on the
//! half-open timer and on repeated msg1s and Hello datagrams, within 3x what the client sent.

mod support;

use std::time::Duration;

use support::endpoint::EndpointNet;
use wavry_netsim::{LinkConfig, LossModel};
use wavry_rift::session::EndpointConfig;

#[test]
fn endpoint_handshakes_complete_under_thirty_percent_loss() {
    let link = LinkConfig::default()
        .with_delay(Duration::from_millis(20))
        .with_loss(LossModel::Bernoulli(0.3));
    let mut slowest = Duration::ZERO;
    for seed in 0..20 {
        let mut n = EndpointNet::new(seed, 2, &link, EndpointConfig::new(4), Some(seed));
        n.run_for(Duration::from_secs(15));
        for k in 0..2 {
            let at = n
                .connected_at(k)
                .unwrap_or_else(|| panic!("seed {seed} client {k}: {:?}", n.ep.stats()));
            slowest = slowest.max(at - n.start);
        }
        assert_eq!(n.host_connected().len(), 2, "seed {seed}");
    }
    println!("slowest endpoint connect under 30 % loss: {slowest:?}");
}
