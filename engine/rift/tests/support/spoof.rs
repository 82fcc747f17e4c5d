//! Spoofed first handshake messages: random source, random handshake id and ephemeral key,
//! padded as a real client pads them; optionally carrying a made-up cookie.

use std::net::SocketAddr;

use wavry_rift::{
    rng::Rng,
    wire::{Cookie, FirstMessage, MSG1_MIN_LEN},
};

pub fn first_message(rng: &mut Rng, with_cookie: bool) -> (SocketAddr, Vec<u8>) {
    let b = rng.bytes::<5>();
    let from = SocketAddr::from((
        [172, 16 + (b[0] & 15), b[1], b[2]],
        u16::from_be_bytes([b[3], b[4]]).max(1),
    ));
    let mut id = rng.bytes::<16>();
    id[..4].fill(0);
    id[15] |= 1;
    let noise = rng.bytes::<32>();
    let cookie = with_cookie.then(|| Cookie {
        timestamp: 0,
        tag: rng.bytes::<32>(),
    });
    let mut out = vec![0u8; MSG1_MIN_LEN];
    FirstMessage::encode(u128::from_be_bytes(id), cookie.as_ref(), &noise, &mut out).unwrap();
    (from, out)
}
