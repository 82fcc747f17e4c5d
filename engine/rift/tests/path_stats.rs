//! What the session reports about its path: periodic `Event::Stats` (RTT, jitter, loss, FEC,
//! NACK, bitrates) measured against netsim links whose properties are known, and keyframe
//! requests limited to one per round trip however many frames a loss burst kills.

mod support;

use std::time::Duration;

use support::{Pair, link, stream::stream};
use wavry_rift::session::{Event, PathStats};

fn stats(events: &[(std::time::Instant, Event)]) -> Vec<PathStats> {
    events
        .iter()
        .filter_map(|(_, e)| match e {
            Event::Stats(s) => Some(*s),
            _ => None,
        })
        .collect()
}

/// 40 ms RTT, 8 Mbit/s of video; the host → client link loses `loss` and jitters by up to
/// `jitter`.
fn run(seed: u64, loss: f64, jitter: Duration) -> (Vec<PathStats>, Vec<PathStats>) {
    run_at(seed, loss, jitter, 8_000_000)
}

fn run_at(
    seed: u64,
    loss: f64,
    jitter: Duration,
    bitrate: u64,
) -> (Vec<PathStats>, Vec<PathStats>) {
    let up = link(Duration::from_millis(20), 0.0, 0.0);
    let down = link(Duration::from_millis(20), loss, 0.0).with_jitter(jitter);
    let mut p = Pair::new(seed, up, down);
    let r = stream(&mut p, 6, 60, bitrate, Duration::from_millis(40));
    assert!(r.sent > 300);
    (stats(&p.host_events), stats(&p.client_events))
}

fn mean(v: impl Iterator<Item = f64>) -> f64 {
    let (n, s) = v.fold((0.0, 0.0), |(n, s), x| (n + 1.0, s + x));
    s / n
}

#[test]
fn stats_report_the_paths_rtt_loss_jitter_and_rates() {
    let (host, client) = run(31, 0.05, Duration::from_millis(6));
    // One report a second on each side (6 s of video plus connection set-up).
    assert!((5..=9).contains(&host.len()), "{} host reports", host.len());
    assert!(
        (5..=9).contains(&client.len()),
        "{} client reports",
        client.len()
    );
    for s in &host[1..] {
        assert!((Duration::from_millis(900)..=Duration::from_millis(1100)).contains(&s.period));
        let rtt = s.rtt.expect("RTT measured");
        // 40 ms propagation plus up to 6 ms of jitter and pacing.
        assert!(
            (Duration::from_millis(38)..Duration::from_millis(70)).contains(&rtt),
            "rtt {rtt:?}"
        );
    }
    // The host learns the loss of what it sends from the client's feedback.
    let busy: Vec<_> = host.iter().filter(|s| s.peer_received > 100).collect();
    assert!(busy.len() >= 4);
    let loss = mean(busy.iter().map(|s| s.loss));
    let rtt = mean(host[1..].iter().map(|s| s.rtt.unwrap().as_secs_f64() * 1e3));
    println!(
        "figure stats on a 40 ms RTT, 5 % loss, U(0,6 ms) jitter link: rtt {rtt:.1} ms, loss {:.2} %, client jitter {:.0} µs",
        loss * 100.0,
        mean(client[2..].iter().map(|s| f64::from(s.jitter_us)))
    );
    assert!(
        (0.035..0.065).contains(&loss),
        "host sees {loss:.4} loss, link has 0.05"
    );
    assert!(
        busy.iter().all(|s| s.send_bps > 6_000_000),
        "video at 8 Mbit/s"
    );
    assert!(
        busy.iter()
            .all(|s| s.target_bps > 0 && s.delivery_bps.is_some())
    );
    // The client repairs and reports what it receives.
    let recovered: u64 = client.iter().map(|s| s.fec_recovered).sum();
    assert!(recovered > 100, "FEC repaired {recovered} chunks");
    let delivered: u64 = client.iter().map(|s| s.frames_delivered).sum();
    assert!(delivered > 300);
    assert!(client[2..].iter().all(|s| s.recv_bps > 5_000_000));
    let peer_jitter = mean(busy.iter().map(|s| f64::from(s.peer_jitter_us)));
    let own_jitter = mean(client[2..].iter().map(|s| f64::from(s.jitter_us)));
    assert!(
        (peer_jitter - own_jitter).abs() < 0.5 * own_jitter.max(1.0),
        "host hears the client's jitter estimate ({peer_jitter} vs {own_jitter})"
    );
}

#[test]
fn jitter_estimate_follows_the_links_jitter() {
    // A sparse flow (one or two datagrams a frame), so the link's FIFO rule does not hide
    // the jitter behind earlier datagrams.
    let jitter = |j| {
        let client = run_at(32, 0.0, j, 400_000).1;
        mean(client[2..].iter().map(|s| f64::from(s.jitter_us)))
    };
    let smooth = jitter(Duration::ZERO);
    let rough = jitter(Duration::from_millis(10));
    println!("figure jitter estimate, link jitter 0 / U(0,10 ms): {smooth:.0} µs / {rough:.0} µs");
    // Uniform 0..10 ms extra delay: mean |difference| of two draws is 3.3 ms.
    assert!(
        rough > smooth + 1500.0,
        "jitter {rough} µs with 10 ms link jitter vs {smooth} µs without"
    );
    assert!(rough < 8000.0, "jitter {rough} µs overestimates the link");
    let clean = run(33, 0.0, Duration::ZERO).0;
    assert!(clean[1..].iter().all(|s| s.loss == 0.0 && s.peer_lost == 0));
}

#[test]
fn keyframe_requests_are_limited_to_one_per_round_trip() {
    // A 2 s outage-like burst: 40 % loss, far beyond what parity and NACK can repair.
    let up = link(Duration::from_millis(20), 0.0, 0.0);
    let down = link(Duration::from_millis(20), 0.4, 8.0);
    let mut p = Pair::new(34, up, down);
    let r = stream(&mut p, 3, 60, 8_000_000, Duration::from_millis(40));
    let dropped = p
        .client_events
        .iter()
        .filter(|(_, e)| matches!(e, Event::FrameDropped { .. }))
        .count();
    let requests: Vec<_> = p
        .host_events
        .iter()
        .filter(|(_, e)| matches!(e, Event::KeyframeRequested { .. }))
        .map(|(t, _)| *t)
        .collect();
    assert!(
        r.late_or_lost > 20 && dropped > 20,
        "{dropped} frames dropped"
    );
    println!(
        "figure keyframe requests for {dropped} frames dropped in 3 s at 40 % bursty loss: {}",
        requests.len()
    );
    assert!(!requests.is_empty(), "a lost frame asks for a keyframe");
    assert!(
        requests.len() < dropped,
        "{} requests for {dropped} dropped frames",
        requests.len()
    );
    // Requests leave at most once per RTT (40 ms); arrival spacing can shrink by the
    // link's jitter, never below half.
    for w in requests.windows(2) {
        assert!(
            w[1] - w[0] >= Duration::from_millis(20),
            "requests {:?} apart",
            w[1] - w[0]
        );
    }
}
