//! One sealed packet whose id jumps far ahead (2^62) is handled at once: the receiver counts
//! the jump instead of walking every skipped id (which hung the driver thread), tracks only
//! the newest gaps for NACKs, and the session keeps delivering afterwards. The test would
//! not finish before the fix.

mod support;

use std::time::Duration;

use support::duo::Duo;
use wavry_rift::{proto, session::Event};

fn ping(ts: u64) -> Vec<u8> {
    wavry_rift::session::Session::encode_for_test(&proto::Message {
        content: Some(proto::message::Content::Control(proto::ControlMessage {
            content: Some(proto::control_message::Content::Ping(proto::Ping {
                timestamp_us: ts,
            })),
        })),
        reliable_seq: 0,
    })
}

#[test]
fn a_packet_id_of_2_pow_62_is_one_step_and_the_stream_goes_on() {
    let mut d = Duo::connected();
    let before = d.client.stats();
    assert_eq!(before.packet_id_jumps, 0);
    let pid = d.inject_to_client(1 << 62, &ping(1));
    assert_eq!(pid, 1 << 62);
    let after = d.client.stats();
    assert_eq!(after.datagrams_received, before.datagrams_received + 1);
    assert_eq!(after.packet_id_jumps, 1, "the jump is counted once");
    // Another jump, to the last id a sender may seal.
    d.inject_to_client(
        wavry_rift::wire::TransportHeader::MAX_PACKET_ID - 1,
        &ping(2),
    );
    assert_eq!(d.client.stats().packet_id_jumps, 2);

    // The NACKs the jump provokes name only ids the host never sent: ignored, counted.
    d.step(Duration::from_millis(20));
    assert!(d.host.stats().nacks_ignored > 0);
    assert!(d.client.is_connected() && d.host.is_connected());

    // The host's counter is past the jump, so its next datagrams would need ids past
    // 2^63 - 2: it cannot send any more; a fresh jump on a fresh pair shows delivery
    // resumes after a jump.
    let mut d = Duo::connected();
    d.inject_to_client(1 << 62, &ping(3));
    d.client_events.clear();
    let data = vec![7u8; 5_000];
    let id = d
        .host
        .send_frame(
            d.now,
            &data,
            wavry_rift::session::FrameMeta::default(),
            Duration::from_millis(16),
        )
        .unwrap();
    for _ in 0..20 {
        d.step(Duration::from_millis(1));
    }
    assert!(
        d.client_events
            .iter()
            .any(|e| matches!(e, Event::Frame(f) if f.frame_id == id && f.data == data)),
        "{:?}",
        d.client_events
    );
    assert!(d.client.stats().datagrams_received > 5);
}
