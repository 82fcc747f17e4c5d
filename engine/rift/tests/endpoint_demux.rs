//! A host endpoint serves several clients on one socket, routes by handshake id and alias,
//! answers a client beyond its capacity with HelloAck{accepted=false}, and counts unroutable
//! datagrams.

use std::{
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use wavry_rift::{
    crypto::PeerPolicy,
    identity::IdentityKey,
    session::{Endpoint, Event, Role, Session, SessionConfig},
};

#[test]
fn two_clients_one_endpoint_third_refused() {
    let host_key = Arc::new(IdentityKey::from_seed([1; 32]).unwrap());
    let mut ep = Endpoint::new(
        SessionConfig::new(Role::Host, PeerPolicy::AnyAuthenticated),
        host_key.clone(),
        2,
    );
    let host_addr: SocketAddr = "10.0.0.2:4000".parse().unwrap();
    let t0 = Instant::now();
    let mut clients: Vec<(SocketAddr, Session)> = (0..3u8)
        .map(|i| {
            let key = Arc::new(IdentityKey::from_seed([10 + i; 32]).unwrap());
            let cfg = SessionConfig::new(Role::Client, PeerPolicy::Pinned(host_key.id()));
            (
                format!("10.0.1.{i}:5000").parse().unwrap(),
                Session::client(t0, cfg, key, host_addr).unwrap(),
            )
        })
        .collect();
    let mut buf = vec![0u8; 65536];
    let mut now = t0;
    // Zero-latency lock-step exchange for 1 s of virtual time.
    for _ in 0..200 {
        for (addr, c) in &mut clients {
            while let Some(t) = c.poll_transmit(now, &mut buf, 1) {
                let mut d = buf[..t.len].to_vec();
                ep.handle_datagram(now, *addr, None, None, &mut d);
            }
        }
        while let Some(t) = ep.poll_transmit(now, &mut buf, 1) {
            let to = t.destination;
            let mut d = buf[..t.len].to_vec();
            if let Some((_, c)) = clients.iter_mut().find(|(a, _)| *a == to) {
                c.handle_datagram(now, host_addr, &mut d);
            }
        }
        now += Duration::from_millis(5);
        ep.handle_timeout(now);
        for (_, c) in &mut clients {
            c.handle_timeout(now);
        }
    }
    let connected = clients.iter().filter(|(_, c)| c.is_connected()).count();
    assert_eq!(connected, 2);
    assert!(ep.stats().refused_full > 0);
    // The third client is told the host is busy at once (no 15 s handshake timeout).
    let refused: Vec<_> = clients
        .iter_mut()
        .filter_map(|(_, c)| {
            std::iter::from_fn(|| c.poll_event()).find(|e| matches!(e, Event::Closed(_)))
        })
        .collect();
    assert_eq!(
        refused,
        vec![Event::Closed(wavry_rift::session::CloseReason::Refused)]
    );
    let mut events = 0;
    while let Some((_, e)) = ep.poll_event() {
        if matches!(e, Event::Connected { .. }) {
            events += 1;
        }
    }
    assert_eq!(events, 2);
    let mut junk = [0u8; 40];
    assert!(
        ep.handle_datagram(now, "10.9.9.9:1".parse().unwrap(), None, None, &mut junk)
            .is_none()
    );
    assert!(ep.stats().unroutable > 0);
}
