//! A cookie reply binds to the client's handshake: an off-path attacker, who does not know the
//! client's random handshake id, cannot make one the client acts on, so it cannot stall the
//! handshake; a genuine cookie reply (host under load) is acted on once and the client
//! connects with its cookie.

use std::{
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use wavry_rift::{
    crypto::PeerPolicy,
    identity::IdentityKey,
    session::{Endpoint, EndpointConfig, Role, Session, SessionConfig},
    wire::{Cookie, encode_cookie_reply},
};

fn run(forged_replies: bool, under_load: bool) -> (Session, Endpoint) {
    let hk = Arc::new(IdentityKey::from_seed([1; 32]).unwrap());
    let ck = Arc::new(IdentityKey::from_seed([2; 32]).unwrap());
    let mut limits = EndpointConfig::new(2);
    if under_load {
        limits.cookie_half_open = 0;
    }
    let mut ep = Endpoint::with_config(
        SessionConfig::new(Role::Host, PeerPolicy::AnyAuthenticated),
        hk.clone(),
        limits,
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
    for step in 0..100u32 {
        if forged_replies && step < 20 {
            // Guessed handshake ids, from the host's address, ahead of the host's answer.
            let mut d = [0u8; 66];
            let guess = u128::from(step) * 0x9E37_79B9 + 1;
            let cookie = Cookie {
                timestamp: 0,
                tag: [step as u8; 32],
            };
            encode_cookie_reply(guess, &cookie, &mut d).unwrap();
            c.handle_datagram(now, ha, &mut d);
        }
        while let Some(t) = c.poll_transmit(now, &mut buf, 1) {
            let mut d = buf[..t.len].to_vec();
            ep.handle_datagram(now, ca, None, None, &mut d);
        }
        while let Some(t) = ep.poll_transmit(now, &mut buf, 1) {
            let mut d = buf[..t.len].to_vec();
            c.handle_datagram(now, ha, &mut d);
        }
        while ep.poll_event().is_some() {}
        now += Duration::from_millis(5);
        c.handle_timeout(now);
        ep.handle_timeout(now);
    }
    (c, ep)
}

#[test]
fn forged_cookie_replies_are_ignored() {
    let (c, ep) = run(true, false);
    assert!(c.is_connected());
    assert_eq!(c.stats().cookie_replies, 0);
    assert!(c.stats().rejected >= 20);
    assert_eq!(ep.stats().cookies_sent, 0);
}

#[test]
fn a_genuine_cookie_reply_is_acted_on_and_the_client_connects() {
    let (c, ep) = run(false, true);
    assert!(c.is_connected());
    assert_eq!(c.stats().cookie_replies, 1);
    assert_eq!(ep.stats().cookies_sent, 1);
    assert_eq!(ep.stats().cookies_invalid, 0);
    assert_eq!(ep.stats().handshakes_completed, 1);
}
