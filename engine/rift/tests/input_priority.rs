//! Input overtakes queued video: a key press sent while a 1 MB burst of video sits in the
//! pacer arrives as fast as one sent on an idle session.

mod support;

use std::time::{Duration, Instant};

use support::{Pair, link};
use wavry_rift::{
    proto,
    session::{Event, FrameMeta},
};

fn key_latency(with_burst: bool) -> Duration {
    let l = link(Duration::from_millis(20), 0.0, 0.0);
    let mut p = Pair::new(5, l.clone(), l);
    assert!(p.connect(Duration::from_secs(5)));
    p.run_for(Duration::from_millis(200));
    let now = p.now;
    if with_burst {
        // A burst of large frames queued on the host right now.
        let frame = vec![7u8; 250_000];
        for i in 0..4 {
            p.host
                .as_mut()
                .unwrap()
                .send_frame(
                    now,
                    &frame,
                    FrameMeta {
                        timestamp_us: i,
                        ..FrameMeta::default()
                    },
                    Duration::from_millis(16),
                )
                .unwrap();
        }
        assert!(p.host.as_ref().unwrap().media_queued() > 100);
    }
    let key = proto::InputMessage {
        timestamp_us: 1,
        event: Some(proto::input_message::Event::Key(proto::Key {
            keycode: 44,
            pressed: true,
        })),
    };
    p.host.as_mut().unwrap().send_input(now, key).unwrap();
    let sent: Instant = now;
    p.run_for(Duration::from_millis(300));
    let at = p
        .client_events
        .iter()
        .find_map(|(t, e)| matches!(e, Event::Input(i) if matches!(i.event, Some(proto::input_message::Event::Key(k)) if k.keycode == 44)).then_some(*t))
        .expect("key press delivered");
    at - sent
}

#[test]
fn input_is_not_delayed_by_a_video_burst() {
    let idle = key_latency(false);
    let busy = key_latency(true);
    println!("key latency idle {idle:?}, behind a 1 MB video burst {busy:?}");
    assert_eq!(idle, Duration::from_millis(20));
    assert!(busy <= idle + Duration::from_millis(1), "{busy:?}");
}
