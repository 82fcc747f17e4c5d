//! Authenticated roaming (issue #15 item 6): a client whose source port changes mid-stream is
//! followed after a path check on its new address; replayed, forged or unanswered packets from
//! other addresses never move the session.

mod support;

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use support::{Pair, duo::Duo, link, stream::stream_with};
use wavry_rift::{
    proto::{self, control_message::Content as Ctl, message::Content},
    session::{Event, MAX_CHALLENGES, Session},
};

const RTT: Duration = Duration::from_millis(40);

fn ping(ts: u64) -> Vec<u8> {
    Session::encode_for_test(&proto::Message {
        content: Some(Content::Control(proto::ControlMessage {
            content: Some(Ctl::Ping(proto::Ping { timestamp_us: ts })),
        })),
        reliable_seq: 0,
    })
}

#[test]
fn a_rebound_client_resumes_within_two_rtts_of_its_first_packet_from_the_new_port() {
    let new: SocketAddr = "10.0.0.1:6001".parse().unwrap();
    let mut p = Pair::new(5, link(RTT / 2, 0.0, 0.0), link(RTT / 2, 0.0, 0.0));
    let mut rebound_at = None;
    let mut moved: Option<(Instant, u64)> = None;
    let mut resumed = None;
    let r = stream_with(&mut p, 4, 60, 20_000_000, RTT, |p| {
        if rebound_at.is_none() && p.now >= p.start + Duration::from_secs(2) {
            p.rebind_client(new);
            rebound_at = Some(p.now);
        }
        let received = p.client.stats().datagrams_received;
        match moved {
            None if p.host.as_ref().unwrap().remote() == new => moved = Some((p.now, received)),
            // The first stream datagram the host sends to the new address after the move.
            Some((_, at_move)) if resumed.is_none() && received > at_move => {
                resumed = Some(p.now);
            }
            _ => {}
        }
    });
    let rebound_at = rebound_at.unwrap();
    let host = p.host.as_ref().unwrap();
    let s = host.stats();
    assert_eq!(host.remote(), new);
    assert_eq!(
        (s.migrations, s.path_checks_started, s.path_checks_failed),
        (1, 1, 0)
    );
    assert!(
        p.lost_to_old_address > 0,
        "the old address stopped receiving"
    );
    // The host can only learn of the new port from the client's first datagram from it: the
    // challenge goes out, the response comes back and the stream flows again within 2 RTTs.
    let first_send = p.first_send_from[&new];
    let resumed = resumed.expect("the stream resumed");
    assert!(first_send >= rebound_at);
    let took = resumed - first_send;
    // 2 RTTs on the wire plus serialisation of a few datagrams.
    assert!(
        took <= 2 * RTT + Duration::from_millis(2),
        "resumed after {took:?}"
    );
    // Frames flow to the new port after the move.
    let after = p
        .client_events
        .iter()
        .filter(|(at, e)| *at > resumed + RTT && matches!(e, Event::Frame(_)))
        .count();
    assert!(after >= 60, "{after} frames after the move");
    println!(
        "rebound: first packet from the new port {:?} after the rebind, resumed {took:?} later; {}/{} frames on time",
        first_send - rebound_at,
        r.on_time,
        r.sent
    );
}

#[test]
fn a_replayed_or_forged_packet_from_another_address_moves_nothing() {
    let mut d = Duo::connected();
    let attacker: SocketAddr = "10.9.9.9:666".parse().unwrap();
    let mut buf = vec![0u8; 256];
    let (_, n) = d.client.seal_for_test(0, &ping(1), &mut buf).unwrap();
    let captured = buf[..n].to_vec();
    d.host.handle_datagram(d.now, d.ca, &mut buf[..n]);
    let before = d.host.stats();

    // Replayed from another address: the replay window refuses it.
    let mut copy = captured.clone();
    d.host.handle_datagram(d.now, attacker, &mut copy);
    // Forged (one bit of a fresh datagram changed) from another address: the AEAD refuses it.
    let (_, m) = d.client.seal_for_test(0, &ping(2), &mut buf).unwrap();
    buf[20] ^= 1;
    d.host.handle_datagram(d.now, attacker, &mut buf[..m]);

    let s = d.host.stats();
    assert_eq!(s.replayed, before.replayed + 1);
    assert_eq!(s.rejected, before.rejected + 1);
    assert_eq!((s.path_checks_started, s.migrations), (0, 0));
    assert_eq!(d.host.remote(), d.ca);
    d.step(Duration::from_millis(10));
    assert_eq!(d.host.stats().path_checks_started, 0);
    assert_eq!(d.host.remote(), d.ca);
}

#[test]
fn a_fresh_packet_raced_from_another_address_fails_its_path_check_and_moves_nothing() {
    let mut d = Duo::connected();
    let attacker: SocketAddr = "10.9.9.9:666".parse().unwrap();
    // An on-path attacker forwards a genuine, not yet delivered datagram from its own address.
    let mut buf = vec![0u8; 256];
    let (_, n) = d.client.seal_for_test(0, &ping(1), &mut buf).unwrap();
    d.host.handle_datagram(d.now, attacker, &mut buf[..n]);
    assert_eq!(d.host.stats().path_checks_started, 1);
    // The challenges go to the attacker's address (which cannot answer: it lacks the keys),
    // at most 3x the bytes it sent.
    let mut out = vec![0u8; 2048];
    let mut to_attacker = 0;
    let mut challenges = 0;
    for _ in 0..200 {
        d.now += Duration::from_millis(20);
        d.host.handle_timeout(d.now);
        while let Some(t) = d.host.poll_transmit(d.now, &mut out, 1) {
            if t.destination == attacker {
                to_attacker += t.len;
                challenges += 1;
            } else {
                d.client.handle_datagram(d.now, d.ha, &mut out[..t.len]);
            }
        }
        d.pump();
    }
    let s = d.host.stats();
    assert!(
        to_attacker > 0 && to_attacker <= 3 * n,
        "{to_attacker} bytes for {n}"
    );
    assert_eq!((s.path_checks_failed, s.migrations), (1, 0));
    assert_eq!(d.host.remote(), d.ca);
    assert!(d.host.is_connected() && d.client.is_connected());
    assert!(challenges <= MAX_CHALLENGES);
}

#[test]
fn the_client_accepts_the_host_only_at_its_known_address() {
    let mut d = Duo::connected();
    let elsewhere: SocketAddr = "10.9.9.9:666".parse().unwrap();
    let mut buf = vec![0u8; 256];
    let (_, n) = d.host.seal_for_test(0, &ping(1), &mut buf).unwrap();
    let before = d.client.stats();
    d.client.handle_datagram(d.now, elsewhere, &mut buf[..n]);
    let s = d.client.stats();
    assert_eq!(s.rejected, before.rejected + 1);
    assert_eq!(s.datagrams_received, before.datagrams_received);
    assert_eq!(d.client.remote(), d.ha);
}
