//! STUN Binding codec (`wavry_rift::wire::stun`): arbitrary datagrams never panic, and every
//! Binding request that is answered gets an answer that parses back to the asker's address.
#![no_main]
use std::net::SocketAddr;

use libfuzzer_sys::fuzz_target;
use wavry_rift::wire::stun::{
    TransactionId, answer_binding_request, is_stun, parse_binding_success,
};

fuzz_target!(|data: &[u8]| {
    let stun = is_stun(data);
    // The datagram's own transaction id (bytes 8..20) reaches past the transaction check.
    let own: TransactionId = data
        .get(8..20)
        .and_then(|t| t.try_into().ok())
        .unwrap_or([0; 12]);
    for txid in [own, [0xa5; 12]] {
        if parse_binding_success(data, &txid).is_ok() {
            assert!(stun, "parsed a datagram that is_stun refuses");
        }
    }
    let froms: [SocketAddr; 2] = [
        "192.0.2.1:32853".parse().expect("v4"),
        "[2001:db8::1]:3478".parse().expect("v6"),
    ];
    for from in froms {
        if let Ok(answer) = answer_binding_request(data, from) {
            assert!(stun, "answered a datagram that is_stun refuses");
            assert!(is_stun(&answer));
            assert_eq!(parse_binding_success(&answer, &own), Ok(from));
        }
    }
});
