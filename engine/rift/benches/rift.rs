//! Criterion benches of the per-packet paths: header encode/decode, in-place seal+open of a
//! 1200-byte datagram through `SecureChannel` next to a raw `ring` seal+open of the same
//! buffer (the baseline, same run), and replay-window updates.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, Nonce, UnboundKey};
use std::hint::black_box;
use wavry_rift::{
    crypto::{PacketKey, SecureChannel},
    identity::WavryId,
    replay::ReplayWindow,
    wire::{Header, RelayHeader, RelayType, TransportHeader},
};

const PAYLOAD: usize = 1200;

fn headers(c: &mut Criterion) {
    let mut g = c.benchmark_group("header");
    let mut buf = [0u8; 64];
    let h = TransportHeader {
        alias: 0x1234_5678,
        packet_id: 42,
    };
    g.bench_function("transport_encode", |b| {
        b.iter(|| black_box(&h).encode(&mut buf).unwrap());
    });
    h.encode(&mut buf).unwrap();
    g.bench_function("detect_decode", |b| {
        b.iter(|| Header::decode(black_box(&buf)).unwrap());
    });
    let mut r = [0u8; 20];
    RelayHeader {
        kind: RelayType::Forward,
        flags: 0,
        session_id: [9; 16],
    }
    .encode(&mut r)
    .unwrap();
    g.bench_function("relay_decode", |b| {
        b.iter(|| RelayHeader::decode(black_box(&r)).unwrap());
    });
    g.finish();
}

fn seal_open(c: &mut Criterion) {
    let mut g = c.benchmark_group("seal_open_1200B");
    g.throughput(Throughput::Bytes(PAYLOAD as u64));
    let mut buf = vec![0u8; 1500];

    // Baseline: ring directly, same buffer, same header-as-AAD, nonce from a counter.
    let k1 = LessSafeKey::new(UnboundKey::new(&CHACHA20_POLY1305, &[1; 32]).unwrap());
    let mut pid = 0u64;
    g.bench_function(BenchmarkId::new("raw_ring", PAYLOAD), |b| {
        b.iter(|| {
            pid += 1;
            let (head, body) = buf.split_at_mut(18);
            let tag = k1
                .seal_in_place_separate_tag(
                    Nonce::assume_unique_for_key(PacketKey::nonce(pid)),
                    Aad::from(&*head),
                    &mut body[..PAYLOAD],
                )
                .unwrap();
            body[PAYLOAD..PAYLOAD + 16].copy_from_slice(tag.as_ref());
            let pt = k1
                .open_in_place(
                    Nonce::assume_unique_for_key(PacketKey::nonce(pid)),
                    Aad::from(&*head),
                    &mut body[..PAYLOAD + 16],
                )
                .unwrap();
            black_box(pt.len())
        });
    });

    let id = WavryId::from_bytes([1; 32]);
    let mut tx = SecureChannel::new(
        PacketKey::new(&[1; 32]),
        PacketKey::new(&[2; 32]),
        id,
        [0; 32],
    );
    let mut rx = SecureChannel::new(
        PacketKey::new(&[2; 32]),
        PacketKey::new(&[1; 32]),
        id,
        [0; 32],
    );
    g.bench_function(BenchmarkId::new("secure_channel", PAYLOAD), |b| {
        b.iter(|| {
            let (_, n) = tx.seal(7, &mut buf, PAYLOAD).unwrap();
            black_box(rx.open(&mut buf[..n]).unwrap().payload.len())
        });
    });
    g.finish();
}

fn replay(c: &mut Criterion) {
    let mut g = c.benchmark_group("replay_window");
    let mut w = ReplayWindow::new();
    let mut seq = 0u64;
    g.bench_function("in_order", |b| {
        b.iter(|| {
            seq += 1;
            w.check_and_update(black_box(seq)).unwrap();
        });
    });
    let mut w = ReplayWindow::new();
    let mut base = 1_000u64;
    g.bench_function("reordered", |b| {
        b.iter(|| {
            base += 4;
            // 4 ids per iteration, delivered out of order.
            for d in [3, 1, 2, 0] {
                w.check_and_update(black_box(base + d)).unwrap();
            }
        });
    });
    g.finish();
}

criterion_group!(benches, headers, seal_open, replay);
criterion_main!(benches);
