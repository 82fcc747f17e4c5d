//! A session connects, authenticates both identities, and carries input, control and video
//! frames intact over a clean path (copied in, or handed over and given back after their
//! deadline); every datagram fits the 1200-byte budget; media that misses its deadline on the
//! host is counted, never sent late.

mod support;

use std::time::Duration;

use support::{Pair, link};
use wavry_netsim::LinkConfig;
use wavry_rift::{
    proto,
    session::{Event, FrameMeta},
};

fn clean() -> LinkConfig {
    link(Duration::from_millis(20), 0.0, 0.0)
}

#[test]
fn connects_and_reports_both_identities() {
    let mut p = Pair::new(1, clean(), clean());
    p.run_for(Duration::from_millis(500));
    assert!(p.connected(), "client events {:?}", p.client_events);
    assert_eq!(p.client.peer(), Some(p.host_key.id()));
    assert_eq!(p.host.as_ref().unwrap().peer(), Some(p.client_key.id()));
    assert!(
        p.client_events
            .iter()
            .any(|(_, e)| matches!(e, Event::Connected { .. }))
    );
    assert!(
        p.host_events
            .iter()
            .any(|(_, e)| matches!(e, Event::Connected { .. }))
    );
}

#[test]
fn frames_arrive_complete_and_in_order() {
    let mut p = Pair::new(2, clean(), clean());
    p.run_for(Duration::from_millis(300));
    assert!(p.connected());
    let interval = Duration::from_micros(16_667);
    let mut sent = Vec::new();
    let start = p.now;
    let mut next = p.now;
    p.run_until(start + Duration::from_secs(2), |p| {
        while p.now >= next && sent.len() < 100 {
            let len = 5_000 + (sent.len() * 977) % 60_000;
            let data: Vec<u8> = (0..len).map(|i| (i * 7 + sent.len()) as u8).collect();
            let meta = FrameMeta {
                timestamp_us: sent.len() as u64 * 16_667,
                keyframe: sent.len() % 30 == 0,
                ..FrameMeta::default()
            };
            p.host
                .as_mut()
                .unwrap()
                .send_frame(p.now, &data, meta, interval)
                .unwrap();
            sent.push(data);
            next += interval;
        }
    });
    let frames: Vec<_> = p
        .client_events
        .iter()
        .filter_map(|(_, e)| {
            if let Event::Frame(f) = e {
                Some(f)
            } else {
                None
            }
        })
        .collect();
    assert_eq!(frames.len(), 100);
    for (i, f) in frames.iter().enumerate() {
        assert_eq!(f.frame_id, i as u64);
        assert_eq!(f.data, sent[i]);
        assert_eq!(f.meta.keyframe, i % 30 == 0);
    }
    assert!(
        p.max_datagram_seen <= 1200,
        "datagram of {} bytes",
        p.max_datagram_seen
    );
}

#[test]
fn input_and_control_arrive() {
    let mut p = Pair::new(3, clean(), clean());
    p.run_for(Duration::from_millis(300));
    let now = p.now;
    p.client
        .send_input(
            now,
            proto::InputMessage {
                timestamp_us: 1,
                event: Some(proto::input_message::Event::Key(proto::Key {
                    keycode: 30,
                    pressed: true,
                })),
            },
        )
        .unwrap();
    p.client
        .send_control(
            now,
            proto::control_message::Content::Clipboard(proto::ClipboardMessage {
                text: "hi".into(),
            }),
        )
        .unwrap();
    p.client
        .send_control(
            now,
            proto::control_message::Content::SelectMonitor(proto::SelectMonitor { monitor_id: 2 }),
        )
        .unwrap();
    p.run_for(Duration::from_millis(200));
    assert!(p.host_events.iter().any(|(_, e)| matches!(e, Event::Input(i) if matches!(i.event, Some(proto::input_message::Event::Key(k)) if k.keycode == 30))));
    // Clipboard text surfaces as its own event (the session tracks it to avoid echoes).
    assert!(
        p.host_events
            .iter()
            .any(|(_, e)| matches!(e, Event::Clipboard(t) if t == "hi"))
    );
    assert!(p.host_events.iter().any(|(_, e)| matches!(e, Event::Control(c) if matches!(&c.content, Some(proto::control_message::Content::SelectMonitor(m)) if m.monitor_id == 2))));
    assert_eq!(p.client.unacked(), 0);
    // Control messages are never fragmented: one that cannot fit a datagram is refused.
    let big = proto::control_message::Content::Clipboard(proto::ClipboardMessage {
        text: "x".repeat(5000),
    });
    let now = p.now;
    assert!(matches!(
        p.client.send_control(now, big),
        Err(wavry_rift::session::SessionError::MessageTooLarge { .. })
    ));
}

#[test]
fn frames_handed_over_arrive_and_their_buffers_come_back_after_the_deadline() {
    let mut p = Pair::new(3, clean(), clean());
    p.run_for(Duration::from_millis(300));
    assert!(p.connected());
    let interval = Duration::from_micros(16_667);
    let mut sent = Vec::new();
    let mut back = Vec::new();
    let start = p.now;
    let mut next = p.now;
    p.run_until(start + Duration::from_secs(1), |p| {
        while p.now >= next && sent.len() < 20 {
            let n = sent.len();
            // A distinct capacity marks each buffer, to recognise it when it comes back.
            let mut data = Vec::with_capacity(200_000 + n);
            data.extend((0..30_000 + n * 1_000).map(|i| (i * 13 + n) as u8));
            sent.push(data.clone());
            let host = p.host.as_mut().unwrap();
            let meta = FrameMeta {
                timestamp_us: n as u64 * 16_667,
                ..FrameMeta::default()
            };
            host.send_frame_buf(p.now, data, meta, interval).unwrap();
            // A buffer comes back only once its frame's deadline (an interval, half the RTT
            // and the playout slack after sending) has passed: never this or the last frame.
            while let Some(b) = host.take_spent_frame() {
                let k = b.capacity() - 200_000;
                assert!(k + 1 < n, "frame {k}'s buffer back while sending frame {n}");
                back.push(k);
            }
            next += interval;
        }
    });
    let frames: Vec<_> = p
        .client_events
        .iter()
        .filter_map(|(_, e)| match e {
            Event::Frame(f) => Some(f.data.clone()),
            _ => None,
        })
        .collect();
    let dropped = p
        .client_events
        .iter()
        .filter(|(_, e)| matches!(e, Event::FrameDropped { .. }))
        .count();
    assert_eq!(
        frames.len(),
        sent.len(),
        "frames delivered ({dropped} dropped)"
    );
    assert!(frames == sent, "a frame arrived altered");
    let host = p.host.as_mut().unwrap();
    back.extend(std::iter::from_fn(|| host.take_spent_frame()).map(|b| b.capacity() - 200_000));
    back.sort_unstable();
    assert_eq!(back, (0..20).collect::<Vec<_>>());
}

#[test]
fn a_frame_with_a_long_deadline_does_not_hold_back_the_buffers_of_later_ones() {
    let mut p = Pair::new(4, clean(), clean());
    p.run_for(Duration::from_millis(300));
    assert!(p.connected());
    let interval = Duration::from_micros(16_667);
    let mut back = Vec::new();
    let mut n = 0usize;
    let start = p.now;
    let mut next = p.now;
    p.run_until(start + Duration::from_millis(500), |p| {
        while p.now >= next && n < 20 {
            let mut data = Vec::with_capacity(200_000 + n);
            data.resize(20_000, n as u8);
            let meta = FrameMeta {
                timestamp_us: n as u64 * 16_667,
                ..FrameMeta::default()
            };
            // Frame 0 announces a 10 s interval: its deadline is far behind everyone else's.
            let this = if n == 0 {
                Duration::from_secs(10)
            } else {
                interval
            };
            let host = p.host.as_mut().unwrap();
            host.send_frame_buf(p.now, data, meta, this).unwrap();
            back.extend(
                std::iter::from_fn(|| host.take_spent_frame()).map(|b| b.capacity() - 200_000),
            );
            n += 1;
            next += interval;
        }
    });
    assert!(!back.contains(&0), "frame 0 is still within its deadline");
    assert!(
        back.len() >= 10,
        "later frames' buffers came back: {back:?}"
    );
}

#[test]
fn media_the_host_could_not_send_before_the_deadline_is_counted_not_sent() {
    let mut p = Pair::new(5, clean(), clean());
    p.run_for(Duration::from_millis(300));
    assert!(p.connected());
    let host = p.host.as_mut().unwrap();
    let before = host.stats();
    let data = vec![7u8; 30_000];
    host.send_frame(
        p.now,
        &data,
        FrameMeta::default(),
        Duration::from_millis(16),
    )
    .unwrap();
    let queued = host.media_queued() as u64;
    assert!(queued > 25, "chunks and parity are queued: {queued}");
    // The host's thread stalls past the frame's deadline (interval + RTT/2 + playout slack),
    // then runs again: nothing of the frame may leave, and every datagram is accounted for.
    let late = p.now + Duration::from_secs(1);
    host.handle_timeout(late);
    let mut buf = vec![0u8; 64 * 1500];
    while host.poll_transmit(late, &mut buf, 32).is_some() {}
    let after = host.stats();
    assert_eq!(after.chunks_sent, before.chunks_sent);
    assert_eq!(after.parity_sent, before.parity_sent);
    assert_eq!(after.media_expired - before.media_expired, queued);
    assert_eq!(host.media_queued(), 0);
}
