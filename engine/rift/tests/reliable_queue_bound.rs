//! A peer that never acknowledges cannot grow the reliable queue past `MAX_UNACKED`: 100 000
//! Hellos (each answered with a reliable HelloAck) or 100 000 reliable control messages from
//! the application leave at most `MAX_UNACKED` queued, and the session closes with the typed
//! reason `CloseReason::ReliableQueueFull` (the application's call gets
//! `SessionError::ReliableQueueFull`).

mod support;

use support::duo::Duo;
use wavry_rift::{
    proto,
    session::{CloseReason, Event, MAX_UNACKED, Session, SessionError},
};

const MESSAGES: u64 = 100_000;

fn hello(seq: u64) -> Vec<u8> {
    Session::encode_for_test(&proto::Message {
        content: Some(proto::message::Content::Control(proto::ControlMessage {
            content: Some(proto::control_message::Content::Hello(proto::Hello {
                client_name: "x".into(),
                protocol_version: 1,
                ..proto::Hello::default()
            })),
        })),
        reliable_seq: seq,
    })
}

fn closed_full(events: &[Event]) -> bool {
    events
        .iter()
        .any(|e| matches!(e, Event::Closed(CloseReason::ReliableQueueFull)))
}

#[test]
fn hellos_never_acknowledged_close_the_session_at_the_bound() {
    let mut d = Duo::connected();
    let mut most = 0;
    for seq in 1..=MESSAGES {
        d.inject_to_host(0, &hello(seq));
        most = most.max(d.host.unacked());
    }
    d.collect();
    println!("most unacked {most}");
    assert!(most <= MAX_UNACKED, "{most} unacknowledged");
    assert_eq!(most, MAX_UNACKED, "the bound was reached");
    assert!(d.host.is_closed());
    assert!(closed_full(&d.host_events), "{:?}", d.host_events);
}

#[test]
fn application_messages_never_acknowledged_are_refused_past_the_bound() {
    let mut d = Duo::connected();
    let mut refused = None;
    for i in 0..MESSAGES {
        let r = d.host.send_control(
            d.now,
            proto::control_message::Content::Ping(proto::Ping { timestamp_us: i }),
        );
        assert!(d.host.unacked() <= MAX_UNACKED);
        if let Err(e) = r {
            refused = Some((i, e));
            break;
        }
    }
    assert_eq!(
        refused,
        Some((MAX_UNACKED as u64, SessionError::ReliableQueueFull))
    );
    d.collect();
    assert!(d.host.is_closed());
    assert!(closed_full(&d.host_events), "{:?}", d.host_events);
    assert_eq!(
        d.host.send_control(
            d.now,
            proto::control_message::Content::Ping(proto::Ping { timestamp_us: 0 })
        ),
        Err(SessionError::NotConnected)
    );
}
