//! Half-open handshakes are not sessions: twelve spoofed first messages against a host with
//! `max_sessions = 1` create twelve small half-open handshakes, but a real client still gets
//! the one session; the half-open handshakes expire quickly and the host never answered any
//! spoofed source with more than 3x the bytes it received from it.

mod support;

use std::time::Duration;

use support::{endpoint::EndpointNet, spoof};
use wavry_netsim::LinkConfig;
use wavry_rift::{rng::Rng, session::EndpointConfig};

#[test]
fn spoofed_first_messages_do_not_take_session_slots() {
    let link = LinkConfig::default().with_delay(Duration::from_millis(10));
    let limits = EndpointConfig::new(1);
    let mut n = EndpointNet::new(3, 0, &link, limits.clone(), Some(4));
    let mut rng = Rng::new(Some(9));
    for _ in 0..12 {
        let (from, d) = spoof::first_message(&mut rng, false);
        n.injections.push_back((n.start, from, d));
    }
    n.run_for(Duration::from_millis(1));
    assert_eq!(n.ep.half_open_len(), 12);
    assert_eq!(n.ep.len(), 0);
    n.add_client();
    n.run_for(Duration::from_secs(1));
    assert!(n.connected_at(0).is_some(), "the real client was kept out");
    assert_eq!(n.ep.len(), 1);
    assert_eq!(n.ep.stats().refused_full, 0);
    // Expired fast (3 s default), each within its amplification budget.
    n.run_for(Duration::from_secs(3));
    assert_eq!(n.ep.half_open_len(), 0);
    assert_eq!(n.ep.stats().half_open_expired, 12);
    assert!(n.ep.stats().amplification_limited > 0);
    for (addr, out) in &n.spoofed_out {
        let inn = n.spoofed_in[addr];
        assert!(
            *out > 0 && *out <= limits.amplification * inn,
            "{addr}: {out} > 3 x {inn}"
        );
    }
}
