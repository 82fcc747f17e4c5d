//! Host CPU per spoofed first handshake message: in cookie mode (a stateless HMAC and a 66-byte
//! reply) next to the full work an unloaded host does (half-open state, two X25519 key
//! generations and two DH operations, an Ed25519 signature, msg2). Both through
//! `Endpoint::handle_datagram` + `poll_transmit`, same run; the ratio is printed at the end
//! (issue #15 asks for cookie mode to be at least 20x cheaper).

use std::{
    hint::black_box,
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use criterion::{Criterion, criterion_group, criterion_main};
use wavry_rift::{
    crypto::PeerPolicy,
    identity::IdentityKey,
    rng::Rng,
    session::{Endpoint, EndpointConfig, Role, SessionConfig},
    wire::{FirstMessage, MSG1_MIN_LEN},
};

fn spoofs(n: u64, rng: &mut Rng) -> Vec<(SocketAddr, Vec<u8>)> {
    (0..n)
        .map(|_| {
            let b = rng.bytes::<5>();
            let from = SocketAddr::from((
                [172, 16 + (b[0] & 15), b[1], b[2]],
                u16::from_be_bytes([b[3], b[4]]).max(1),
            ));
            let mut id = rng.bytes::<16>();
            id[..4].fill(0);
            id[15] |= 1;
            let mut out = vec![0u8; MSG1_MIN_LEN];
            FirstMessage::encode(u128::from_be_bytes(id), None, &rng.bytes::<32>(), &mut out)
                .unwrap();
            (from, out)
        })
        .collect()
}

/// An endpoint that always answers with cookies (`cookie`) or never does.
fn endpoint(cookie: bool) -> Endpoint {
    let key = Arc::new(IdentityKey::from_seed([1; 32]).unwrap());
    let mut limits = EndpointConfig::new(8);
    if cookie {
        limits.cookie_half_open = 0;
    } else {
        limits.cookie_half_open = usize::MAX;
        limits.cookie_rate = u32::MAX;
        limits.max_half_open = usize::MAX;
    }
    Endpoint::with_config(
        SessionConfig::new(Role::Host, PeerPolicy::AnyAuthenticated),
        key,
        limits,
    )
}

/// Time to handle `iters` spoofed first messages (fresh endpoint, messages made beforehand).
fn run(cookie: bool, iters: u64) -> Duration {
    let mut ep = endpoint(cookie);
    let msgs = spoofs(iters, &mut Rng::new(Some(iters)));
    let mut buf = vec![0u8; 2048];
    let now = Instant::now();
    let start = Instant::now();
    for (from, mut d) in msgs {
        ep.handle_datagram(now, from, None, None, &mut d);
        while let Some(t) = ep.poll_transmit(now, &mut buf, 1) {
            black_box(t);
        }
    }
    let took = start.elapsed();
    assert_eq!(ep.stats().cookies_sent > 0, cookie);
    took
}

fn first_message(c: &mut Criterion) {
    let mut g = c.benchmark_group("spoofed_msg1");
    g.bench_function("cookie_reply", |b| b.iter_custom(|n| run(true, n)));
    g.bench_function("full_handshake", |b| b.iter_custom(|n| run(false, n)));
    g.finish();
    // The same comparison in one pass, for the ratio.
    let cookie = run(true, 20_000).as_secs_f64() / 20_000.0;
    let full = run(false, 2_000).as_secs_f64() / 2_000.0;
    println!(
        "spoofed msg1: cookie mode {:.2} us, full handshake {:.1} us: cookie mode {:.0}x cheaper",
        cookie * 1e6,
        full * 1e6,
        full / cookie
    );
}

criterion_group!(benches, first_message);
criterion_main!(benches);
