use std::{collections::VecDeque, time::Instant};

use super::Receiver;
use crate::{
    crypto::PeerPolicy,
    fec::FecCodec,
    identity::WavryId,
    media::{self, FecPacketRef, MediaRef, ShardLengths, VideoChunkRef},
    session::{Event, Frame, Role, SessionConfig},
};

const C: usize = 100;

fn receiver() -> Receiver {
    Receiver::new(&SessionConfig::new(
        Role::Client,
        PeerPolicy::Pinned(WavryId::from_bytes([7; 32])),
    ))
}

/// A frame of `len` bytes as the sender encodes it: chunk messages of `C`-byte payloads.
fn chunks(frame: &[u8]) -> Vec<Vec<u8>> {
    let n = frame.len().div_ceil(C);
    (0..n)
        .map(|i| {
            let mut b = Vec::new();
            VideoChunkRef {
                frame_id: 0,
                chunk_index: i as u32,
                chunk_count: n as u32,
                timestamp_us: 1_000,
                keyframe: true,
                payload: &frame[i * C..((i + 1) * C).min(frame.len())],
                capture_us: 3,
                encode_us: 4,
            }
            .append_to(&mut b);
            b
        })
        .collect()
}

/// Reed-Solomon parity messages over all of `msgs` as one group.
fn parity(msgs: &[Vec<u8>], p: usize) -> Vec<Vec<u8>> {
    let sb = crate::fec::shard_bytes(msgs.iter().map(Vec::len).max().unwrap());
    let padded: Vec<Vec<u8>> = msgs
        .iter()
        .map(|m| {
            let mut m = m.clone();
            m.resize(sb, 0);
            m
        })
        .collect();
    let mut out = Vec::new();
    FecCodec::default()
        .encode(
            sb,
            msgs.len(),
            p,
            padded.iter().map(Vec::as_slice),
            |j, b| {
                let pkt = FecPacketRef {
                    group_id: 0,
                    first_chunk: 0,
                    shard_count: (msgs.len() + p) as u32,
                    parity_index: (msgs.len() + j) as u32,
                    payload: b,
                    shard_lengths: ShardLengths::default(),
                    data_shards: msgs.len() as u32,
                };
                let mut buf = vec![0; pkt.encoded_len()];
                pkt.encode(&mut buf).unwrap();
                out.push(buf);
            },
        )
        .unwrap();
    out
}

fn feed(r: &mut Receiver, now: Instant, msg: &[u8], events: &mut VecDeque<Event>) -> bool {
    match media::decode(msg).unwrap() {
        MediaRef::Video(c) => r.on_chunk(now, msg, c, events),
        MediaRef::Fec(p) => r.on_parity(now, &p, events),
        _ => panic!("not video"),
    }
}

fn frames(events: &VecDeque<Event>) -> Vec<&Frame> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Frame(f) => Some(f),
            _ => None,
        })
        .collect()
}

fn sample(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
}

#[test]
fn chunks_in_any_order_assemble_the_frame_in_place() {
    let frame = sample(1_050);
    let now = Instant::now();
    let mut r = receiver();
    let mut events = VecDeque::new();
    // Reverse order: the short last chunk first, before the chunk length is known.
    for m in chunks(&frame).iter().rev() {
        assert!(feed(&mut r, now, m, &mut events));
    }
    let got = frames(&events);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].data, frame);
    // A recycled buffer longer than the next frame: the stale tail is cut off.
    let Some(Event::Frame(f)) = events.pop_front() else {
        panic!()
    };
    r.recycle(f.data);
    let next = sample(250);
    let mut events = VecDeque::new();
    for mut m in chunks(&next) {
        // Same encoding, next frame id.
        m.clone_from(&{
            let mut b = Vec::new();
            let MediaRef::Video(mut c) = media::decode(&m).unwrap() else {
                panic!()
            };
            c.frame_id = 1;
            c.append_to(&mut b);
            b
        });
        assert!(feed(&mut r, now, &m, &mut events));
    }
    assert_eq!(frames(&events)[0].data, next);
}

#[test]
fn chunks_that_contradict_the_frame_geometry_are_refused() {
    let frame = sample(1_050);
    let now = Instant::now();
    let mut r = receiver();
    let mut events = VecDeque::new();
    let msgs = chunks(&frame);
    assert!(feed(&mut r, now, &msgs[0], &mut events));
    // Chunk 1 claiming a different length than chunk 0.
    let mut b = Vec::new();
    VideoChunkRef {
        frame_id: 0,
        chunk_index: 1,
        chunk_count: msgs.len() as u32,
        timestamp_us: 1_000,
        keyframe: true,
        payload: &frame[..C - 1],
        capture_us: 3,
        encode_us: 4,
    }
    .append_to(&mut b);
    assert!(!feed(&mut r, now, &b, &mut events));
    // A last chunk longer than the others.
    let mut b = Vec::new();
    VideoChunkRef {
        frame_id: 0,
        chunk_index: msgs.len() as u32 - 1,
        chunk_count: msgs.len() as u32,
        timestamp_us: 1_000,
        keyframe: true,
        payload: &frame[..=C],
        capture_us: 3,
        encode_us: 4,
    }
    .append_to(&mut b);
    assert!(!feed(&mut r, now, &b, &mut events));
    // The genuine chunks still complete the frame.
    for m in &msgs[1..] {
        assert!(feed(&mut r, now, m, &mut events));
    }
    assert_eq!(frames(&events)[0].data, frame);
}

#[test]
fn repair_rebuilds_shards_from_envelopes_and_the_frame() {
    let frame = sample(1_050);
    let msgs = chunks(&frame);
    let par = parity(&msgs, 2);
    let now = Instant::now();
    let mut r = receiver();
    let mut events = VecDeque::new();
    // Chunks 0 and 4 lost; the last arrives first.
    feed(&mut r, now, &msgs[10], &mut events);
    for i in [1, 2, 3, 5, 6, 7, 8, 9] {
        feed(&mut r, now, &msgs[i], &mut events);
    }
    assert!(frames(&events).is_empty());
    feed(&mut r, now, &par[0], &mut events);
    assert!(frames(&events).is_empty(), "two losses, one parity shard");
    feed(&mut r, now, &par[1], &mut events);
    let got = frames(&events);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].data, frame);
    assert_eq!(got[0].fec_recovered, 2);
}

#[test]
fn repair_from_the_last_chunk_alone_places_it_once_the_length_is_known() {
    let frame = sample(250);
    let msgs = chunks(&frame);
    assert_eq!(msgs.len(), 3);
    let par = parity(&msgs, 2);
    let now = Instant::now();
    let mut r = receiver();
    let mut events = VecDeque::new();
    feed(&mut r, now, &msgs[2], &mut events);
    feed(&mut r, now, &par[0], &mut events);
    feed(&mut r, now, &par[1], &mut events);
    let got = frames(&events);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].data, frame);
    assert_eq!(got[0].fec_recovered, 2);
}

#[test]
fn frame_deadlines_follow_the_announced_frame_rate_not_the_local_default() {
    let mut r = receiver();
    let slack = SessionConfig::new(Role::Client, PeerPolicy::AnyAuthenticated).playout_slack;
    let now = Instant::now();
    // The first frame sets the clock offset: its deadline is one interval plus slack away.
    assert_eq!(
        r.deadline_for(now, 0) - now,
        std::time::Duration::from_secs(1) / 60 + slack
    );
    r.set_frame_rate(30);
    assert_eq!(
        r.deadline_for(now, 0) - now,
        std::time::Duration::from_secs(1) / 30 + slack
    );
    r.set_frame_rate(0);
    assert_eq!(
        r.deadline_for(now, 0) - now,
        std::time::Duration::from_secs(1) / 30 + slack,
        "0 keeps the rate"
    );
}
