//! A host accepts no video, parity or audio from its client: each such message, though
//! authenticated, is dropped and counted (`role_refused`); the same messages from the host
//! reach the client.

mod support;

use support::duo::Duo;
use wavry_rift::{
    media::{AudioPacketRef, FecPacketRef, ShardLengths, VideoChunkRef},
    session::Event,
};

fn messages() -> Vec<Vec<u8>> {
    let mut video = Vec::new();
    VideoChunkRef {
        frame_id: 0,
        chunk_index: 0,
        chunk_count: 1,
        timestamp_us: 0,
        keyframe: true,
        payload: b"frame",
        capture_us: 0,
        encode_us: 0,
    }
    .append_to(&mut video);
    let p = FecPacketRef {
        group_id: 5,
        first_chunk: 0,
        shard_count: 3,
        parity_index: 2,
        payload: &[1; 64],
        shard_lengths: ShardLengths::default(),
        data_shards: 2,
    };
    let mut fec = vec![0; p.encoded_len()];
    p.encode(&mut fec).unwrap();
    let mut audio = vec![0; 64];
    let n = AudioPacketRef {
        timestamp_us: 9,
        payload: b"opus",
    }
    .encode(&mut audio)
    .unwrap();
    audio.truncate(n);
    vec![video, fec, audio]
}

#[test]
fn a_host_drops_media_from_its_client_and_counts_it() {
    let mut d = Duo::connected();
    d.host_events.clear();
    d.client_events.clear();
    let received = d.host.stats().datagrams_received;
    for m in messages() {
        d.inject_to_host(0, &m);
    }
    d.collect();
    let s = d.host.stats();
    assert_eq!(s.datagrams_received, received + 3, "they authenticated");
    assert_eq!(s.role_refused, 3);
    assert!(
        !d.host_events
            .iter()
            .any(|e| matches!(e, Event::Frame(_) | Event::Audio { .. })),
        "{:?}",
        d.host_events
    );
    assert!(d.host.is_connected());

    // The other way round they are media as usual.
    for m in messages() {
        d.inject_to_client(0, &m);
    }
    d.collect();
    assert_eq!(d.client.stats().role_refused, 0);
    assert!(d.client_events.iter().any(|e| matches!(e, Event::Frame(_))));
    assert!(
        d.client_events
            .iter()
            .any(|e| matches!(e, Event::Audio { data, .. } if data == b"opus"))
    );
}
