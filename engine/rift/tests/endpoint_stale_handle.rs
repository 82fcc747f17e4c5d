//! Generational handles: after a session closes and a new client takes its slot, the old
//! handle is refused with a typed error and cannot send anything to the new client.

mod support;

use std::time::Duration;

use support::endpoint::EndpointNet;
use wavry_netsim::LinkConfig;
use wavry_rift::{
    proto::{MonitorList, control_message::Content},
    session::{EndpointConfig, Event, SessionError},
};

#[test]
fn a_stale_handle_cannot_reach_the_next_client_in_its_slot() {
    let link = LinkConfig::default().with_delay(Duration::from_millis(5));
    let mut n = EndpointNet::new(1, 1, &link, EndpointConfig::new(1), Some(2));
    n.run_for(Duration::from_millis(500));
    let old = n.host_connected()[0];
    let now = n.now;
    n.ep.session_mut(old).unwrap().close(now, "bye");
    n.run_for(Duration::from_millis(200));
    assert!(n.clients[0].1.is_closed());
    assert!(n.ep.is_empty());

    let b = n.add_client();
    n.run_for(Duration::from_millis(500));
    let new = n.host_connected()[1];
    assert_eq!(new.index(), old.index(), "the slot is reused");
    assert_ne!(new, old);

    let now = n.now;
    assert!(matches!(
        n.ep.session_mut(old),
        Err(SessionError::StaleHandle)
    ));
    let sent =
        n.ep.session_mut(old)
            .and_then(|s| s.send_control(now, Content::MonitorList(MonitorList::default())));
    assert_eq!(sent, Err(SessionError::StaleHandle));
    n.run_for(Duration::from_millis(200));
    assert!(
        !n.client_events[b]
            .iter()
            .any(|(_, e)| matches!(e, Event::Control(_) | Event::Closed(_))),
        "the new client heard from the old handle"
    );
    // The new handle reaches the new client.
    let now = n.now;
    n.ep.session_mut(new)
        .unwrap()
        .send_control(now, Content::MonitorList(MonitorList::default()))
        .unwrap();
    n.run_for(Duration::from_millis(200));
    let got = n.client_events[b]
        .iter()
        .filter(|(_, e)| matches!(e, Event::Control(_)))
        .count();
    assert_eq!(got, 1);
}
