//! A spoofed first-message flood (100 000 per second from random sources, 1.5 s) while four
//! real clients connect: the host switches to stateless cookie replies, all four clients connect
//! within 1 s of virtual time, the host sends spoofed sources fewer bytes than it received from
//! them, and spoofed first messages carrying made-up cookies create no state.

mod support;

use std::time::Duration;

use support::{endpoint::EndpointNet, spoof};
use wavry_netsim::LinkConfig;
use wavry_rift::{rng::Rng, session::EndpointConfig};

#[test]
fn four_clients_connect_through_a_spoofed_first_message_flood() {
    let link = LinkConfig::default().with_delay(Duration::from_millis(20));
    let limits = EndpointConfig::new(8);
    let mut n = EndpointNet::new(7, 4, &link, limits.clone(), Some(99));
    let mut rng = Rng::new(Some(5));
    let mut with_cookie = 0u64;
    for k in 0..150_000u64 {
        // Once the host is surely in cookie mode, every fourth spoof repeats "msg1" with a
        // made-up cookie, as an attacker who cannot receive cookie replies would.
        let cookie = k >= 1_000 && k % 4 == 3;
        with_cookie += u64::from(cookie);
        let (from, d) = spoof::first_message(&mut rng, cookie);
        n.injections
            .push_back((n.start + Duration::from_micros(10 * k), from, d));
    }
    n.run_for(Duration::from_secs(2));

    for k in 0..4 {
        let at = n
            .connected_at(k)
            .unwrap_or_else(|| panic!("client {k} did not connect"));
        assert!(
            at - n.start <= Duration::from_secs(1),
            "client {k}: {:?}",
            at - n.start
        );
        assert_eq!(
            n.clients[k].1.stats().cookie_replies,
            1,
            "client {k} got a cookie"
        );
    }
    assert_eq!(n.host_connected().len(), 4);
    assert_eq!(n.ep.len(), 4);

    let spoofed_in: u64 = n.spoofed_in.values().sum();
    let spoofed_out: u64 = n.spoofed_out.values().sum();
    assert_eq!(spoofed_in, 150_000 * 256);
    assert!(spoofed_out <= spoofed_in, "{spoofed_out} > {spoofed_in}");

    let st = n.ep.stats();
    // State was created only before the load was detected (and for the four real clients).
    assert!(
        st.half_open_created <= limits.cookie_half_open as u64 + 4,
        "{st:?}"
    );
    assert_eq!(st.cookies_invalid, with_cookie, "{st:?}");
    assert!(st.cookies_sent >= 149_000 - with_cookie, "{st:?}");
    assert_eq!(st.handshakes_completed, 4);
    println!(
        "flood: in {spoofed_in} B, out {spoofed_out} B ({:.3}x); {st:?}",
        spoofed_out as f64 / spoofed_in as f64
    );
}

/// The same flood while a connected client receives a 60 fps stream and four more clients
/// connect: every frame of the established stream arrives (none dropped), and the four
/// connect within 1 s.
#[test]
fn an_established_stream_loses_no_frame_during_the_flood() {
    use wavry_rift::session::{Event, FrameMeta};
    let link = LinkConfig::default().with_delay(Duration::from_millis(20));
    let mut n = EndpointNet::new(8, 1, &link, EndpointConfig::new(8), Some(98));
    n.run_for(Duration::from_millis(500));
    let streamer = *n
        .host_connected()
        .first()
        .expect("the streaming client connected");
    let flood_start = n.now;
    let mut rng = Rng::new(Some(6));
    for k in 0..150_000u64 {
        let (from, d) = spoof::first_message(&mut rng, false);
        n.injections
            .push_back((flood_start + Duration::from_micros(10 * k), from, d));
    }
    for _ in 0..4 {
        n.add_client();
    }
    let interval = Duration::from_secs(1) / 60;
    let frame = vec![5u8; 20_000];
    let mut sent = 0u64;
    let mut next = flood_start;
    let end = flood_start + Duration::from_millis(1_500);
    n.run_until(end + Duration::from_millis(300), |n| {
        while n.now >= next && next < end {
            n.ep.session_mut(streamer)
                .unwrap()
                .send_frame(
                    n.now,
                    &frame,
                    FrameMeta {
                        timestamp_us: sent * interval.as_micros() as u64,
                        ..FrameMeta::default()
                    },
                    interval,
                )
                .unwrap();
            sent += 1;
            next += interval;
        }
    });
    let frames = n.client_events[0]
        .iter()
        .filter(|(at, e)| *at >= flood_start && matches!(e, Event::Frame(_)))
        .count() as u64;
    let dropped = n.client_events[0]
        .iter()
        .filter(|(_, e)| matches!(e, Event::FrameDropped { .. }))
        .count();
    assert!(sent >= 85, "{sent} frames sent");
    assert_eq!((frames, dropped), (sent, 0), "frames lost during the flood");
    for k in 1..5 {
        let at = n
            .connected_at(k)
            .unwrap_or_else(|| panic!("client {k} did not connect"));
        assert!(at - flood_start <= Duration::from_secs(1), "client {k}");
    }
    assert_eq!(n.ep.len(), 5);
    println!(
        "flood with a stream: {frames}/{sent} frames, {:?}",
        n.ep.stats()
    );
}
