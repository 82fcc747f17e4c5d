//! A complete frame whose id jumps far ahead of the stream (2^62) is delivered at once: the
//! frames skipped are reported by a bounded number of `FrameDropped` events and skipped in
//! one step, not one event per missing id (which hung the receiver and filled its queue).

mod support;

use support::duo::Duo;
use wavry_rift::{media::VideoChunkRef, session::Event};

fn chunk(frame_id: u64, payload: &[u8]) -> Vec<u8> {
    let mut m = Vec::new();
    VideoChunkRef {
        frame_id,
        chunk_index: 0,
        chunk_count: 1,
        timestamp_us: frame_id.min(1 << 40),
        keyframe: true,
        payload,
        capture_us: 0,
        encode_us: 0,
    }
    .append_to(&mut m);
    m
}

#[test]
fn a_frame_id_of_2_pow_62_is_delivered_after_a_bounded_skip() {
    let mut d = Duo::connected();
    d.client_events.clear();
    d.inject_to_client(0, &chunk(0, b"first"));
    d.inject_to_client(0, &chunk(1 << 62, b"far"));
    d.inject_to_client(0, &chunk((1 << 62) + 1, b"next"));
    d.collect();
    let frames: Vec<u64> = d
        .client_events
        .iter()
        .filter_map(|e| match e {
            Event::Frame(f) => Some(f.frame_id),
            _ => None,
        })
        .collect();
    assert_eq!(frames, [0, 1 << 62, (1 << 62) + 1]);
    let dropped = d
        .client_events
        .iter()
        .filter(|e| matches!(e, Event::FrameDropped { .. }))
        .count();
    assert!((1..=16).contains(&dropped), "{dropped} FrameDropped events");
}
