//! A wake of the host `Endpoint` runs only the sessions that are due: the timer heap is
//! popped (O(log n) per due timer), no session that is not due is looked at. Counted, not
//! timed.

mod support;

use std::time::Duration;

use support::endpoint::EndpointNet;
use wavry_netsim::LinkConfig;
use wavry_rift::session::EndpointConfig;

#[test]
fn a_wake_runs_only_the_due_sessions_of_many() {
    let n_clients = 48;
    let link = LinkConfig::default().with_delay(Duration::from_millis(7));
    let mut n = EndpointNet::new(3, 1, &link, EndpointConfig::new(64), Some(4));
    // Clients arrive 13 ms apart, so their timers are spread out.
    for _ in 1..n_clients {
        n.run_for(Duration::from_millis(13));
        n.add_client();
    }
    n.run_for(Duration::from_secs(2));
    assert_eq!(n.ep.len(), n_clients);
    let handles = n.host_connected();
    for _ in 0..20 {
        let t = n.ep.poll_timeout().expect("a timer is armed");
        let due = handles
            .iter()
            .filter(|&&h| {
                n.ep.session_mut(h)
                    .unwrap()
                    .poll_timeout()
                    .is_some_and(|d| d <= t)
            })
            .count() as u64;
        let before = n.ep.stats().session_timers_run;
        n.ep.handle_timeout(t);
        let ran = n.ep.stats().session_timers_run - before;
        assert_eq!(ran, due, "only the due sessions run");
        assert!(
            ran < n_clients as u64 / 4,
            "{ran} of {n_clients} ran at once"
        );
        // Move the clock there and let the network catch up before the next wake.
        n.run_until(t, |_| {});
    }
}
