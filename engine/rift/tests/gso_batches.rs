//! A fast video stream leaves in long GSO batches: every datagram of a batch has the batch's
//! segment size (parity datagrams, frames' short last chunks and the next frame's chunks are
//! zero-padded to it) except the last, and the receiver cuts the padding, so frames of every
//! size still arrive byte for byte. On a clean path each FEC group's single XOR parity is
//! built as its chunks leave, and it rebuilds a lost chunk.

mod support;

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use wavry_rift::{
    cc::DeltaConfig,
    crypto::PeerPolicy,
    session::{Event, FrameMeta, Role, Session, SessionConfig},
};

/// Datagrams per GSO send the test asks for (the kernel's limit at 1200 B).
const SEGMENTS: usize = 54;
/// Frames sent before the test's own, with feedback flowing (see `run`).
const WARM_FRAMES: u64 = 40;

fn pair(t0: Instant, ca: SocketAddr, ha: SocketAddr) -> (Session, Session) {
    support::direct_pair(t0, (4, 3), (ca, ha), |host| {
        // Far above what the test sends: the pacer never splits a batch.
        let rate = 40_000_000_000;
        host.cc = DeltaConfig {
            min_bps: rate,
            max_bps: rate,
            initial_bps: rate,
            ..DeltaConfig::default()
        };
        host.pacer_burst = 4 * SEGMENTS;
    })
}

/// What streaming the test's frames produced.
struct Run {
    sent: Vec<Vec<u8>>,
    frames: Vec<wavry_rift::session::Frame>,
    transmits: usize,
    datagrams: usize,
    /// Media batches with fewer than SEGMENTS datagrams.
    short: usize,
    /// 1 ms steps in which something was sent.
    steps: usize,
    /// Parity datagrams the host sent for the test's frames.
    parity: u64,
    client: Session,
}

/// Connects, queues 24 frames of many sizes (short last chunks of every length, one to three
/// FEC groups) and sends them host to client in GSO batches, checking each batch's layout;
/// datagram `i` (counted from the first frame's) is lost when `lose(i)`. Nothing goes back to
/// the host after the handshake, so a lost chunk can only be rebuilt from parity.
fn run(lose: impl Fn(usize) -> bool) -> Run {
    let (ca, ha): (SocketAddr, SocketAddr) =
        ("10.0.0.1:1".parse().unwrap(), "10.0.0.2:2".parse().unwrap());
    let mut now = Instant::now();
    let (mut client, mut host) = pair(now, ca, ha);
    let mut buf = vec![0u8; 64 << 10];
    // Handshake, one datagram at a time.
    for _ in 0..50 {
        while let Some(t) = client.poll_transmit(now, &mut buf, 1) {
            host.handle_datagram(now, ca, &mut buf[..t.len]);
        }
        while let Some(t) = host.poll_transmit(now, &mut buf, 1) {
            client.handle_datagram(now, ha, &mut buf[..t.len]);
        }
        now += Duration::from_millis(1);
    }
    assert!(client.is_connected() && host.is_connected());
    let interval = Duration::from_millis(16);
    // Warm-up with feedback both ways: reports of clean delivery (one per 5 ms, ~110
    // datagrams each) take the FEC policy's loss estimate from its 1 % prior towards 0, so
    // parity drops to its clean-path floor: one XOR shard per group of at most 50 chunks.
    let warm = vec![9u8; 120_000];
    for k in 0..WARM_FRAMES {
        let meta = FrameMeta {
            timestamp_us: k * 5_000,
            ..FrameMeta::default()
        };
        host.send_frame(now, &warm, meta, interval).unwrap();
        for _ in 0..5 {
            now += Duration::from_millis(1);
            for s in [&mut host, &mut client] {
                if s.poll_timeout().is_some_and(|t| t <= now) {
                    s.handle_timeout(now);
                }
            }
            while let Some(t) = host.poll_transmit(now, &mut buf, 1) {
                client.handle_datagram(now, ha, &mut buf[..t.len]);
            }
            while let Some(t) = client.poll_transmit(now, &mut buf, 1) {
                host.handle_datagram(now, ca, &mut buf[..t.len]);
            }
        }
    }
    while client.poll_event().is_some() {}
    let parity0 = host.stats().parity_sent;

    let sent: Vec<Vec<u8>> = (0..24)
        .map(|i| (0..3_000 + i * 5_311).map(|b| (b * 31 + i) as u8).collect())
        .collect();
    for (i, f) in sent.iter().enumerate() {
        let meta = FrameMeta {
            timestamp_us: i as u64 * 16_000,
            ..FrameMeta::default()
        };
        host.send_frame(now, f, meta, interval).unwrap();
    }
    let (mut transmits, mut short, mut datagrams, mut steps) = (0, 0, 0, 0);
    // 20 ms of virtual time in 1 ms steps (the pacer refills its burst in each).
    for _ in 0..20 {
        now += Duration::from_millis(1);
        let before = transmits;
        if host.poll_timeout().is_some_and(|t| t <= now) {
            host.handle_timeout(now);
        }
        while let Some(t) = host.poll_transmit(now, &mut buf, SEGMENTS) {
            let seg = t.segment_size.unwrap_or(t.len);
            let segments: Vec<(usize, usize)> = (0..t.len)
                .step_by(seg)
                .map(|at| (at, seg.min(t.len - at)))
                .collect();
            // Every segment but the last has the segment size; the last is no longer.
            assert!(segments.len() <= SEGMENTS);
            assert!(segments.iter().all(|&(_, len)| len <= seg));
            assert!(
                segments[..segments.len() - 1]
                    .iter()
                    .all(|&(_, len)| len == seg)
            );
            transmits += 1;
            // A media batch cut short (feedback datagrams travel alone).
            if seg > 1000 && segments.len() < SEGMENTS {
                short += 1;
            }
            for (at, len) in segments {
                if !lose(datagrams) {
                    client.handle_datagram(now, ha, &mut buf[at..at + len]);
                }
                datagrams += 1;
            }
        }
        steps += usize::from(transmits > before);
    }
    let frames = std::iter::from_fn(|| client.poll_event())
        .filter_map(|e| match e {
            Event::Frame(f) => Some(f),
            _ => None,
        })
        .collect();
    let parity = host.stats().parity_sent - parity0;
    Run {
        sent,
        frames,
        transmits,
        datagrams,
        short,
        steps,
        parity,
        client,
    }
}

fn assert_intact(r: &Run) {
    assert_eq!(r.frames.len(), r.sent.len());
    for (i, f) in r.frames.iter().enumerate() {
        assert_eq!(f.frame_id, WARM_FRAMES + i as u64);
        assert_eq!(f.data, r.sent[i], "frame {i}");
    }
    assert_eq!(r.client.stats().malformed, 0);
}

#[test]
fn video_leaves_in_full_uniform_batches_and_arrives_intact() {
    let r = run(|_| false);
    let mean = r.datagrams as f64 / r.transmits as f64;
    println!(
        "{} datagrams in {} transmits ({} short): {mean:.1} each",
        r.datagrams, r.transmits, r.short
    );
    // Unpadded, each parity datagram and each frame's last chunk ended a batch (about 12
    // datagrams per send for frames like these); padded, only the 54-segment limit, the
    // pacer's grant (once per step) and the end of the queue (once) do.
    assert!(
        r.short <= r.steps + 1,
        "{} short batches in {} steps",
        r.short,
        r.steps
    );
    assert!(mean >= 40.0, "mean GSO batch {mean:.1}");
    assert_intact(&r);
}

#[test]
fn single_parity_built_as_chunks_leave_repairs_a_lost_chunk() {
    // One datagram in 61 lost: at most one per FEC group (groups hold at most 50 chunks
    // on a clean path), so each loss of a chunk is repaired from its group's XOR parity,
    // which the sender built while the chunks went out.
    let r = run(|i| i % 61 == 30);
    // The policy is at its floor: one parity shard per group of at most 50 chunks.
    let chunk = SessionConfig::new(Role::Host, PeerPolicy::AnyAuthenticated).chunk_payload();
    let groups: u64 = r
        .sent
        .iter()
        .map(|f| f.len().div_ceil(chunk).div_ceil(50) as u64)
        .sum();
    assert_eq!(r.parity, groups);
    let lost = r.datagrams.div_ceil(61);
    let recovered = r.client.stats().fec_recovered;
    println!("{lost} datagrams lost, {recovered} chunks rebuilt from parity");
    // Some losses hit a parity datagram, which needs no repair.
    assert!(recovered >= lost as u64 * 3 / 4, "{recovered} of {lost}");
    assert_intact(&r);
}
