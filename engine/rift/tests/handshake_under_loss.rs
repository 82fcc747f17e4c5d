//! The handshake (with Hello/HelloAck) completes under 30 % loss in both directions: msg1 is
//! retransmitted with backoff, the host re-sends its cached msg2, a repeated msg2 brings back the
//! cached msg3, and Hello/HelloAck ride the reliable channel.

mod support;

use std::time::Duration;

use support::{Pair, link};

#[test]
fn completes_under_thirty_percent_loss_both_ways() {
    let mut slowest = Duration::ZERO;
    for seed in 0..20 {
        let l = link(Duration::from_millis(20), 0.3, 0.0);
        let mut p = Pair::new(seed, l.clone(), l);
        assert!(
            p.connect(Duration::from_secs(15)),
            "seed {seed} did not connect"
        );
        slowest = slowest.max(p.now - p.start);
        assert_eq!(p.client.peer(), Some(p.host_key.id()));
    }
    println!("slowest connect under 30 % loss: {slowest:?}");
}

#[test]
fn gives_up_with_a_reason_when_the_host_is_silent() {
    let mut p = Pair::new(
        1,
        link(Duration::from_millis(20), 1.0, 0.0),
        link(Duration::from_millis(20), 0.0, 0.0),
    );
    p.run_for(Duration::from_secs(20));
    assert!(p.client.is_closed());
    assert!(p.client_events.iter().any(|(_, e)| matches!(
        e,
        wavry_rift::session::Event::Closed(wavry_rift::session::CloseReason::HandshakeTimeout)
    )));
    assert!(p.client.stats().handshake_retransmits >= 5);
}
