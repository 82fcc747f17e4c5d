//! Frames a hostile host only starts (one chunk of a 4096-chunk frame, each reserving the
//! whole frame) cannot make the client hold more frame buffer than its budget
//! (`frame_budget(max_frame)`: 2 x 4 MiB + 1 MiB by default, where 16 slots of 4 MiB were
//! 64 MiB before): chunks past it are refused and counted, and real frames still arrive.

mod support;

use std::time::Duration;

use support::duo::Duo;
use wavry_rift::{
    media::VideoChunkRef,
    session::{Event, SessionConfig, frame_budget},
};

#[global_allocator]
static GLOBAL: support::alloc::Counting = support::alloc::Counting;

/// Per-chunk bookkeeping of 16 frame slots of 4096 chunks (about 104 bytes a chunk) comes on
/// top of the frame buffers: 7 MiB, plus small change.
const TABLES: usize = 8 << 20;

fn chunk(frame_id: u64, index: u32, count: u32, payload: &[u8]) -> Vec<u8> {
    let mut m = Vec::new();
    VideoChunkRef {
        frame_id,
        chunk_index: index,
        chunk_count: count,
        timestamp_us: 0,
        keyframe: true,
        payload,
        capture_us: 0,
        encode_us: 0,
    }
    .append_to(&mut m);
    m
}

#[test]
fn half_started_huge_frames_stay_within_the_frame_budget() {
    let mut d = Duo::connected();
    d.keep_events = false;
    let max_frame = SessionConfig::new(
        wavry_rift::session::Role::Client,
        wavry_rift::crypto::PeerPolicy::AnyAuthenticated,
    )
    .max_frame;
    let cap = frame_budget(max_frame) + TABLES;
    let payload = vec![0x33; 1_000];
    let usage = support::alloc::measure(|| {
        for f in 0..200u64 {
            // Chunk 1 of 4096: the slot reserves 4096 x 1000 bytes for the whole frame.
            d.inject_to_client(0, &chunk(10 + f, 1, 4_096, &payload));
            if f % 8 == 7 {
                d.step(Duration::from_millis(5));
            }
        }
    });
    let s = d.client.stats();
    println!("{usage:?}, refused {}", s.frame_budget_refused);
    assert!(
        usage.peak_growth <= isize::try_from(cap).unwrap(),
        "live heap grew {} bytes, cap {cap}",
        usage.peak_growth
    );
    assert!(s.frame_budget_refused > 0, "the budget engaged");

    // A real frame still arrives.
    d.keep_events = true;
    d.step(Duration::from_secs(1));
    d.client_events.clear();
    d.inject_to_client(0, &chunk(1_000, 0, 1, b"real"));
    d.collect();
    assert!(
        d.client_events
            .iter()
            .any(|e| matches!(e, Event::Frame(f) if f.frame_id == 1_000 && f.data == b"real")),
        "{:?}",
        d.client_events
    );
}
