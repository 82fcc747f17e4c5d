//! Arbitrary datagrams into a host endpoint: header detection, handshake admission, routing by
//! alias, and (once a session exists) its authentication path. The sender is also a relay
//! path of the endpoint (session id 0x11…), so relay headers, LEASE_ACK / LEASE_REJECT
//! payloads and FORWARDed handshakes are reached too. Nothing may panic.
#![no_main]
use std::{
    net::SocketAddr,
    sync::{Arc, OnceLock},
    time::Instant,
};

use libfuzzer_sys::fuzz_target;
use wavry_rift::{
    crypto::PeerPolicy,
    identity::IdentityKey,
    relay_client::{RelayClientConfig, RelayLease},
    session::{Endpoint, Role, SessionConfig},
    wire::PeerRole,
};

fn key() -> Arc<IdentityKey> {
    static KEY: OnceLock<Arc<IdentityKey>> = OnceLock::new();
    KEY.get_or_init(|| Arc::new(IdentityKey::from_seed([3; 32]).expect("seed")))
        .clone()
}

fuzz_target!(|data: &[u8]| {
    let mut ep = Endpoint::new(
        SessionConfig::new(Role::Host, PeerPolicy::AnyAuthenticated),
        key(),
        4,
    );
    let from: SocketAddr = "10.0.0.1:1000".parse().expect("addr");
    let now = Instant::now();
    ep.add_relay_path(
        now,
        1_800_000_000_000,
        RelayLease {
            relay_addr: from,
            relay_id: "wr-fuzz".into(),
            session_id: [0x11; 16],
            role: PeerRole::Server,
            token: "v4.public.fuzz".into(),
        },
        RelayClientConfig::default(),
    )
    .expect("lease");
    // Feed the input, then the same bytes split in two datagrams.
    let mut a = data.to_vec();
    ep.handle_datagram(now, from, None, None, &mut a);
    let mid = data.len() / 2;
    let mut b = data[..mid].to_vec();
    let mut c = data[mid..].to_vec();
    ep.handle_datagram(now, from, None, None, &mut b);
    ep.handle_datagram(now, from, None, None, &mut c);
    let mut out = vec![0u8; 4096];
    while ep.poll_transmit(now, &mut out, 4).is_some() {}
    ep.handle_timeout(now);
    while ep.poll_event().is_some() {}
    while ep.poll_relay_event().is_some() {}
});
