//! Relay mode: every datagram, handshake included, carries the 20-byte FORWARD relay header for
//! the relay session (the original sent msg1/msg3 bare, so encrypted sessions could not cross a
//! relay); datagrams for another relay session are refused.

mod support;

use std::time::Duration;

use support::{Pair, link};
use wavry_rift::{
    crypto::PeerPolicy,
    identity::IdentityKey,
    session::{Event, FrameMeta, RelayPath, Role, SessionConfig},
    wire::{RelayHeader, RelayType},
};

#[test]
fn every_datagram_is_relay_framed_and_frames_flow() {
    let host_key = std::sync::Arc::new(IdentityKey::from_seed([1; 32]).unwrap());
    let client_key = std::sync::Arc::new(IdentityKey::from_seed([2; 32]).unwrap());
    let relay = Some(RelayPath {
        session_id: [0xAB; 16],
    });
    let mut hc = SessionConfig::new(Role::Host, PeerPolicy::Pinned(client_key.id()));
    hc.relay = relay;
    let mut cc = SessionConfig::new(Role::Client, PeerPolicy::Pinned(host_key.id()));
    cc.relay = relay;
    let l = link(Duration::from_millis(15), 0.0, 0.0);
    let mut p = Pair::with_configs(3, l.clone(), l, cc, hc, client_key, host_key);
    let mut bare = 0u64;
    p.filter = Some(Box::new(move |_, d| {
        match RelayHeader::decode(d) {
            Ok(h) if h.kind == RelayType::Forward && h.session_id == [0xAB; 16] => {}
            _ => bare += 1,
        }
        assert_eq!(bare, 0, "a datagram left without its relay header");
        true
    }));
    assert!(p.connect(Duration::from_secs(5)));
    let now = p.now;
    for i in 0..10 {
        p.host
            .as_mut()
            .unwrap()
            .send_frame(
                now,
                &[i as u8; 3000],
                FrameMeta::default(),
                Duration::from_millis(16),
            )
            .unwrap();
    }
    p.run_for(Duration::from_millis(300));
    let frames = p
        .client_events
        .iter()
        .filter(|(_, e)| matches!(e, Event::Frame(_)))
        .count();
    assert_eq!(frames, 10);
    assert!(p.max_datagram_seen <= 1200);

    // A datagram for another relay session is refused and counted.
    let before = p.client.stats().rejected;
    let mut foreign = [0u8; 64];
    RelayHeader {
        kind: RelayType::Forward,
        flags: 0,
        session_id: [0xCD; 16],
    }
    .encode(&mut foreign)
    .unwrap();
    let ha = p.host_addr;
    p.client.handle_datagram(p.now, ha, &mut foreign);
    assert_eq!(p.client.stats().rejected, before + 1);
}
