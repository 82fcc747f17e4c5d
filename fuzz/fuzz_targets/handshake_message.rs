//! Handshake messages from the network: as msg1 to a responder, as msg2 to an initiator, and
//! the identity proof decoder. Nothing may panic; garbage never authenticates.
#![no_main]
use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use wavry_rift::{
    crypto::{AuthPayload, Handshake, HandshakeRole, PeerPolicy},
    identity::IdentityKey,
};

fn key() -> Arc<IdentityKey> {
    static KEY: OnceLock<Arc<IdentityKey>> = OnceLock::new();
    KEY.get_or_init(|| Arc::new(IdentityKey::from_seed([7; 32]).expect("seed"))).clone()
}

fuzz_target!(|data: &[u8]| {
    let _ = AuthPayload::decode(data);
    let mut out = [0u8; 256];
    let mut r = Handshake::new(HandshakeRole::Responder, key(), PeerPolicy::AnyAuthenticated).expect("new");
    let _ = r.step(Some(data), &mut out);
    let mut i = Handshake::new(HandshakeRole::Initiator, key(), PeerPolicy::AnyAuthenticated).expect("new");
    i.step(None, &mut out).expect("msg1");
    assert!(i.step(Some(data), &mut out).is_err(), "random bytes completed msg2");
});
