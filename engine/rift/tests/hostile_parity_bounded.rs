//! 200 000 hostile parity packets from a connected (authenticated) host leave the client's
//! memory bounded and its per-packet cost flat: every new (group, parity index) pair, every
//! new frame id created by parity alone and every oversized group is either kept within the
//! receive caps or refused and counted, and every slot expires. Measured with a counting
//! allocator (live heap bytes, allocations), not with wall time.

mod support;

use std::time::Duration;

use support::duo::Duo;
use wavry_rift::{
    media::{FecPacketRef, ShardLengths, VideoChunkRef},
    session::{Event, MAX_HELD_PARITY},
};

#[global_allocator]
static GLOBAL: support::alloc::Counting = support::alloc::Counting;

const PACKETS: u64 = 200_000;

/// The stated cap: the client's live heap grows by at most this much under the whole flood.
/// The receiver keeps at most `MAX_HELD_PARITY` (2048) parity shards, each in a pooled
/// 2 KiB buffer: 4 MiB; group and parity tables are small. (Before the caps, the flood
/// kept every shard: about 400 MB.)
const LIVE_CAP: isize = 8 << 20;

/// Allocations allowed over the second half of the flood (100 000 packets): the per-packet
/// cost must be flat, so the pools and tables sized during the first half are reused (the
/// few left are the buffer pool reaching its peak).
const SECOND_HALF_ALLOCS: usize = 64;

fn parity(buf: &mut Vec<u8>, p: &FecPacketRef<'_>) {
    buf.resize(p.encoded_len(), 0);
    let n = p.encode(buf).unwrap();
    buf.truncate(n);
}

/// Packets per main frame: the flood moves to a new frame id every this many.
const WINDOW: u64 = 8_000;

/// The `k`-th hostile packet: several attack shapes interleaved, deterministically. Each
/// window has a main frame (the highest id, so slot eviction spares it) that collects new
/// parity indices and new groups until the caps refuse them.
fn hostile(k: u64, buf: &mut Vec<u8>, payload: &[u8]) {
    let w = k / WINDOW;
    let base = 1_000_000 + w * 10_000;
    let main = base + 9_999;
    let j = k / 5 % (WINDOW / 5);
    let (group_id, first_chunk, data, shards, index) = match k % 5 {
        // A new parity index of one big group, up to its parity limit and past it.
        0 => (main, 0, 64, 96, 64 + (j % 40) as u32),
        // New groups with new parity indices in the same frame.
        1 => (main, 64 * (1 + j % 150), 64, 96, 64 + (j / 150 % 32) as u32),
        // A new frame id created by parity alone (below the main frame).
        2 => (base + j, 0, 32, 64, 40),
        // Geometry contradicting the group already seen.
        3 => (main, 0, 48, 64, 50),
        // Frame ids behind the stream.
        _ => (k % 1_000, k, 64, 96, 70),
    };
    let len = 1_000 + (w * 38 % 1_048) as usize;
    parity(
        buf,
        &FecPacketRef {
            group_id,
            first_chunk,
            shard_count: shards,
            parity_index: index,
            payload: &payload[..len],
            shard_lengths: ShardLengths::default(),
            data_shards: data,
        },
    );
}

#[test]
fn a_parity_flood_keeps_the_receiver_bounded_and_flat() {
    let mut d = Duo::connected();
    d.keep_events = false;
    let payload = vec![0x5a; 2_048];
    let mut buf = Vec::with_capacity(4_096);
    let mut sent = 0;
    let mut flood = |d: &mut Duo, upto: u64| {
        while sent < upto {
            hostile(sent, &mut buf, &payload);
            d.inject_to_client(0, &buf);
            sent += 1;
            if sent % 400 == 0 {
                // Time passes (20 ms a window): slots created by parity alone must expire.
                d.step(Duration::from_millis(1));
            }
        }
    };
    let first = support::alloc::measure(|| flood(&mut d, PACKETS / 2));
    let second = support::alloc::measure(|| flood(&mut d, PACKETS));
    let stats = d.client.stats();
    println!(
        "first half {first:?}, second half {second:?}, parity refused {}, dropped {}",
        stats.parity_refused, stats.frames_dropped
    );
    assert!(d.client.is_connected() && !d.client.is_closed());
    assert!(
        first.peak_growth.max(first.end_growth + second.peak_growth) <= LIVE_CAP,
        "live heap grew past {LIVE_CAP} bytes"
    );
    assert!(
        second.allocs <= SECOND_HALF_ALLOCS,
        "{} allocations over the second half: the per-packet cost grows",
        second.allocs
    );
    assert!(stats.parity_refused > PACKETS / 5, "the caps engaged");
    assert!(
        stats.frames_dropped >= PACKETS / WINDOW - 1,
        "slots made by parity alone expired"
    );
    assert!(MAX_HELD_PARITY * 2_048 < LIVE_CAP as usize);

    // The receiver still works: a real frame after the flood is delivered.
    d.keep_events = true;
    d.step(Duration::from_secs(1));
    d.client_events.clear();
    let frame_id = 1 << 62;
    let data: Vec<u8> = (0..300u32).map(|i| i as u8).collect();
    for i in 0..3u32 {
        let mut m = Vec::new();
        VideoChunkRef {
            frame_id,
            chunk_index: i,
            chunk_count: 3,
            timestamp_us: 0,
            keyframe: true,
            payload: &data[i as usize * 100..(i as usize + 1) * 100],
            capture_us: 0,
            encode_us: 0,
        }
        .append_to(&mut m);
        d.inject_to_client(0, &m);
    }
    d.pump();
    assert!(
        d.client_events
            .iter()
            .any(|e| matches!(e, Event::Frame(f) if f.frame_id == frame_id && f.data == data)),
        "{:?}",
        d.client_events
    );
}
