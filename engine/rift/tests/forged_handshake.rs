//! Forged handshake messages (right handshake id and source address, bytes that do not
//! decrypt) are dropped and counted: a forged msg3 reaching the host first does not stop the
//! real msg3 from completing the handshake, and a forged msg2 does not stop the client.

mod support;

use std::time::{Duration, Instant};

use support::endpoint::EndpointNet;
use wavry_netsim::LinkConfig;
use wavry_rift::{
    session::EndpointConfig,
    wire::{HandshakeHeader, Header},
};

fn is_step(d: &[u8], step: u64) -> bool {
    matches!(Header::decode(d), Ok(Header::Handshake(h)) if h.packet_id == step)
}

fn forge(d: &[u8]) -> Vec<u8> {
    let mut f = d.to_vec();
    for b in &mut f[HandshakeHeader::LEN..] {
        *b ^= 0x5A;
    }
    f
}

#[test]
fn a_forged_msg3_does_not_stop_the_real_one() {
    let link = LinkConfig::default().with_delay(Duration::from_millis(10));
    let mut n = EndpointNet::new(1, 1, &link, EndpointConfig::new(4), Some(6));
    let mut forged = 0;
    n.filter = Some(Box::new(move |view, k, d| {
        if forged == 0 && is_step(d, 3) {
            // The attacker saw msg3 go by and races a forged copy to the host.
            forged += 1;
            view.extra
                .push(("10.0.1.1:5000".parse().unwrap(), forge(d)));
        }
        let _ = k;
        true
    }));
    n.run_for(Duration::from_secs(1));
    assert!(n.connected_at(0).is_some());
    assert_eq!(n.host_connected().len(), 1);
    let st = n.ep.stats();
    assert_eq!(st.forged_handshake_dropped, 1, "{st:?}");
    assert_eq!(st.handshakes_failed, 0);
    assert_eq!(st.handshakes_completed, 1);
}

#[test]
fn a_forged_msg2_does_not_stop_the_client() {
    use std::{net::SocketAddr, sync::Arc};
    use wavry_rift::{
        crypto::PeerPolicy,
        identity::IdentityKey,
        session::{Endpoint, Role, Session, SessionConfig},
    };
    let hk = Arc::new(IdentityKey::from_seed([1; 32]).unwrap());
    let ck = Arc::new(IdentityKey::from_seed([2; 32]).unwrap());
    let mut ep = Endpoint::new(
        SessionConfig::new(Role::Host, PeerPolicy::AnyAuthenticated),
        hk.clone(),
        2,
    );
    let ca: SocketAddr = "10.0.0.1:5000".parse().unwrap();
    let ha: SocketAddr = "10.0.0.2:4000".parse().unwrap();
    let t0 = Instant::now();
    let mut c = Session::client(
        t0,
        SessionConfig::new(Role::Client, PeerPolicy::Pinned(hk.id())),
        ck,
        ha,
    )
    .unwrap();
    let mut buf = vec![0u8; 4096];
    let mut now = t0;
    let mut forged = false;
    for _ in 0..100 {
        while let Some(t) = c.poll_transmit(now, &mut buf, 1) {
            let mut d = buf[..t.len].to_vec();
            ep.handle_datagram(now, ca, None, None, &mut d);
        }
        while let Some(t) = ep.poll_transmit(now, &mut buf, 1) {
            let d = buf[..t.len].to_vec();
            if !forged && is_step(&d, 2) {
                forged = true;
                c.handle_datagram(now, ha, &mut forge(&d));
                assert!(!c.is_closed());
            }
            c.handle_datagram(now, ha, &mut d.clone());
        }
        while ep.poll_event().is_some() {}
        now += Duration::from_millis(5);
        c.handle_timeout(now);
        ep.handle_timeout(now);
    }
    assert!(c.is_connected());
    assert_eq!(c.stats().handshake_forged, 1);
}
