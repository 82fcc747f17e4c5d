//! Transport feedback with extreme field values (all ones, zero intervals, acknowledgement
//! delays of an hour, byte counts no path carries, packet ids never sent, endless lists)
//! changes no estimate into nonsense and panics in no build (debug overflow checks on):
//! the target stays within DELTA's bounds, the RTT within the time that passed, loss within
//! [0, 1], delivery rates within what the sender paces; the clamps are counted.

mod support;

use std::time::{Duration, Instant};

use support::duo::Duo;
use wavry_rift::{
    cc::{CcSample, Delta, DeltaConfig},
    fec::{FecPolicy, MAX_PARITY},
    proto,
    session::{Event, Session},
};

fn feedback(fb: proto::TransportFeedback) -> Vec<u8> {
    Session::encode_for_test(&proto::Message {
        content: Some(proto::message::Content::Control(proto::ControlMessage {
            content: Some(proto::control_message::Content::Feedback(fb)),
        })),
        reliable_seq: 0,
    })
}

fn extremes() -> Vec<proto::TransportFeedback> {
    let mut out = Vec::new();
    for highest in [0, 1, 2, 5, 20, 1 << 40, u64::MAX] {
        for (bytes, packets, interval) in [
            (u64::MAX, u32::MAX, u32::MAX),
            (u64::MAX, u32::MAX, 20_000),
            (u64::MAX, 1, 1),
            (1 << 50, 0, 100_000),
            (0, u32::MAX, 0),
        ] {
            out.push(proto::TransportFeedback {
                highest_packet_id: highest,
                ack_delay_us: [0, u32::MAX][usize::from(highest % 2 == 1)],
                received_packets: packets,
                lost_packets: u32::MAX - (packets / 2),
                received_bytes: bytes,
                interval_us: interval,
                fec_recovered: u32::MAX,
                jitter_us: u32::MAX,
                frame_losses: vec![u32::MAX, 0, 1_000, 1_001],
                acked_reliable: (0..300).map(|i| u64::MAX - i).chain([0, 1, 2]).collect(),
            });
        }
    }
    out
}

#[test]
fn extreme_feedback_leaves_every_estimate_sane() {
    let mut d = Duo::connected();
    let cfg = DeltaConfig::default();
    let mut sent = 0;
    for fb in extremes() {
        d.step(Duration::from_millis(7));
        d.inject_to_host(0, &feedback(fb));
        sent += 1;
        let h = &d.host;
        let target = h.target_bitrate();
        assert!(
            (cfg.min_bps..=cfg.max_bps).contains(&target),
            "target {target} after report {sent}"
        );
        if let Some(rtt) = h.rtt() {
            assert!(rtt <= d.now - d.start, "rtt {rtt:?} after report {sent}");
        }
        assert!(h.is_connected());
    }
    // A stats period covering them: loss a fraction, delivery within what the host paces.
    d.step(Duration::from_millis(1_100));
    let stats: Vec<_> = d
        .host_events
        .iter()
        .filter_map(|e| match e {
            Event::Stats(s) => Some(*s),
            _ => None,
        })
        .collect();
    assert!(!stats.is_empty());
    for s in &stats {
        assert!((0.0..=1.0).contains(&s.loss), "{s:?}");
        assert!((cfg.min_bps..=cfg.max_bps).contains(&s.target_bps), "{s:?}");
        if let Some(bps) = s.delivery_bps {
            // Pacing runs at most 4x the target; delivery is believed up to twice that.
            assert!(bps <= 8 * cfg.max_bps, "{s:?}");
        }
    }
    assert!(d.host.stats().feedback_clamped > 0);
}

#[test]
fn the_controller_and_fec_policy_take_extreme_samples() {
    let t0 = Instant::now();
    let cfg = DeltaConfig::default();
    let mut d = Delta::new(cfg.clone());
    let rtts = [
        Duration::ZERO,
        Duration::from_nanos(1),
        Duration::MAX,
        Duration::from_secs(u64::from(u32::MAX)),
        Duration::from_millis(40),
    ];
    let deliveries = [None, Some(0), Some(1), Some(u64::MAX)];
    let mut now = t0;
    for (i, &rtt) in rtts.iter().cycle().take(200).enumerate() {
        now += Duration::from_millis(if i % 7 == 0 { 0 } else { 5 });
        let counts = [(u32::MAX, u32::MAX), (0, u32::MAX), (u32::MAX, 0), (0, 0)];
        let (received, lost) = counts[i % counts.len()];
        d.on_sample(CcSample {
            now,
            rtt,
            delivery_bps: deliveries[i % deliveries.len()],
            received,
            lost,
        });
        assert!((cfg.min_bps..=cfg.max_bps).contains(&d.target_bps()));
        assert!((1..=cfg.fps).contains(&d.target_fps()));
    }
    let mut p = FecPolicy::default();
    for (r, l) in [(u32::MAX, u32::MAX), (0, u32::MAX), (u32::MAX, 0), (0, 0)] {
        p.on_feedback(r, l, [u32::MAX, 0, 999]);
        assert!((0.0..=1.0).contains(&p.loss()), "{}", p.loss());
        for n in [1, 10, 64] {
            assert!((1..=MAX_PARITY.min(n)).contains(&p.parity_for(n)));
        }
    }
}
