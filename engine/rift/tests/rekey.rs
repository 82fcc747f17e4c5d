//! Rekeying with forward secrecy (issue #15 item 5): new keys from a fresh ephemeral
//! Diffie-Hellman every `rekey_interval`, switched without a gap by the key phase bit; the
//! previous keys open reordered packets during the grace period and nothing after it.

mod support;

use std::time::Duration;

use support::{Pair, duo::Duo, link, stream::stream_with};
use wavry_netsim::LinkConfig;
use wavry_rift::{
    proto::{self, control_message::Content as Ctl, message::Content},
    session::{Event, Session},
    wire::{Header, TransportHeader},
};

fn ping(ts: u64) -> Vec<u8> {
    Session::encode_for_test(&proto::Message {
        content: Some(Content::Control(proto::ControlMessage {
            content: Some(Ctl::Ping(proto::Ping { timestamp_us: ts })),
        })),
        reliable_seq: 0,
    })
}

fn phase_of(datagram: &[u8]) -> bool {
    match Header::decode(datagram) {
        Ok(Header::Transport(TransportHeader { key_phase, .. })) => key_phase,
        other => panic!("not a transport datagram: {other:?}"),
    }
}

#[test]
fn old_phase_opens_during_the_grace_period_and_never_after() {
    let mut d = Duo::connected_with(|c| {
        c.rekey_interval = Duration::from_secs(1);
        c.rekey_grace = Duration::from_millis(200);
    });
    // Two genuine client datagrams under the handshake's keys, held back (reordered).
    let mut early = vec![0u8; 256];
    let mut late = vec![0u8; 256];
    let (_, n1) = d.client.seal_for_test(0, &ping(1), &mut early).unwrap();
    let (_, n2) = d.client.seal_for_test(0, &ping(2), &mut late).unwrap();
    assert!(!phase_of(&early[..n1]));

    let mut waited = 0;
    while d.host.stats().rekeys_completed == 0 {
        d.step(Duration::from_millis(10));
        waited += 1;
        assert!(waited < 300, "no rekey within 3 s");
    }
    let (h, c) = (d.host.stats(), d.client.stats());
    assert_eq!(
        (h.rekeys_started, h.rekeys_completed, h.rekeys_failed),
        (1, 1, 0)
    );
    assert_eq!(
        (c.rekeys_started, c.rekeys_completed, c.rekeys_failed),
        (1, 1, 0)
    );
    assert_eq!((d.host.key_generation(), d.client.key_generation()), (1, 1));

    // Traffic after the rekey is sealed under the new phase on both sides.
    let mut buf = vec![0u8; 256];
    let (_, n) = d.client.seal_for_test(0, &ping(3), &mut buf).unwrap();
    assert!(phase_of(&buf[..n]));
    let (_, n) = d.host.seal_for_test(0, &ping(3), &mut buf).unwrap();
    assert!(phase_of(&buf[..n]));

    // Within the grace period the held-back old-phase datagram still opens.
    let before = d.host.stats().datagrams_received;
    d.host.handle_datagram(d.now, d.ca, &mut early[..n1]);
    assert_eq!(d.host.stats().datagrams_received, before + 1);

    // After it, the old keys are erased: refused by phase, not opened.
    for _ in 0..25 {
        d.step(Duration::from_millis(10));
    }
    let s = d.host.stats();
    d.host.handle_datagram(d.now, d.ca, &mut late[..n2]);
    let t = d.host.stats();
    assert_eq!(t.datagrams_received, s.datagrams_received);
    assert_eq!(t.stale_key_phase, s.stale_key_phase + 1);
    assert!(d.client.is_connected() && d.host.is_connected());
}

#[test]
fn the_packet_count_trigger_rekeys_too() {
    let mut d = Duo::connected_with(|c| {
        c.rekey_interval = Duration::ZERO;
        c.rekey_after_packets = 20;
    });
    for _ in 0..400 {
        d.step(Duration::from_millis(50));
    }
    let h = d.host.stats();
    assert!(h.rekeys_completed >= 2, "{h:?}");
    assert_eq!(h.rekeys_failed, 0);
    assert_eq!(d.client.stats().rekeys_failed, 0);
    assert!(d.client.is_connected() && d.host.is_connected());
}

#[test]
fn a_rekey_from_the_client_or_a_bad_key_is_refused_and_counted() {
    let mut d = Duo::connected();
    let rekey = |g, key: Vec<u8>| {
        Session::encode_for_test(&proto::Message {
            content: Some(Content::Control(proto::ControlMessage {
                content: Some(Ctl::Rekey(proto::Rekey {
                    generation: g,
                    public_key: key,
                })),
            })),
            reliable_seq: 0,
        })
    };
    // The host never takes a Rekey (only it starts them).
    d.inject_to_host(0, &rekey(1, vec![9; 32]));
    assert_eq!(d.host.stats().rekeys_failed, 1);
    // The client refuses a low-order key and a skipped generation, and keeps its keys.
    d.inject_to_client(0, &rekey(1, vec![0; 32]));
    d.inject_to_client(0, &rekey(5, vec![9; 32]));
    d.inject_to_client(0, &rekey(1, vec![9; 7]));
    assert_eq!(d.client.stats().rekeys_failed, 3);
    assert_eq!(d.client.key_generation(), 0);
    d.step(Duration::from_millis(10));
    assert!(d.client.is_connected() && d.host.is_connected());
}

const RTT: Duration = Duration::from_millis(40);

fn lossy() -> LinkConfig {
    let mut l = link(RTT / 2, 0.01, 0.0);
    l.reorder = 0.01;
    l
}

/// Ten minutes at 60 fps and 20 Mbit/s over 1 % loss and 1 % reordering, rekeying every two
/// minutes: five rekeys complete, every datagram that arrives opens (no key was missing at
/// either side at any moment), and every frame sent within 2 s of a rekey arrives within
/// 100 ms. (The same run without rekeying is not byte-comparable: the rekey datagrams shift
/// the links' random streams, so loss falls on other packets.)
#[test]
fn ten_minutes_rekeying_every_two_minutes_loses_nothing_to_rekeying() {
    let interval = Duration::from_secs(1) / 60;
    let mut p = Pair::with(42, lossy(), lossy(), |_, c| {
        c.rekey_interval = Duration::from_secs(120);
    });
    assert!(p.connect(Duration::from_secs(10)));
    let t0 = p.now;
    let mut rekeys = Vec::new();
    let r = stream_with(&mut p, 600, 60, 20_000_000, RTT, |p| {
        let done = p.host.as_ref().unwrap().stats().rekeys_completed as usize;
        if done > rekeys.len() {
            rekeys.push(p.now);
        }
    });
    let h = p.host.as_ref().unwrap().stats();
    let c = p.client.stats();
    println!(
        "{}/{} on time; rekeys host {}/{}/{} client {}/{}/{}; at {:?}",
        r.on_time,
        r.sent,
        h.rekeys_started,
        h.rekeys_completed,
        h.rekeys_failed,
        c.rekeys_started,
        c.rekeys_completed,
        c.rekeys_failed,
        rekeys.iter().map(|t| *t - t0).collect::<Vec<_>>()
    );
    assert_eq!(h.rekeys_completed, 5, "{h:?}");
    assert_eq!(c.rekeys_completed, 5, "{c:?}");
    assert_eq!(p.client.key_generation(), 5);
    assert_eq!(h.rekeys_failed + c.rekeys_failed, 0);
    // No datagram was refused for its key: none failed authentication, none hit erased keys.
    assert_eq!((c.rejected, c.stale_key_phase), (0, 0));
    assert_eq!((h.rejected, h.stale_key_phase), (0, 0));
    let delivered: std::collections::HashMap<u64, std::time::Instant> = p
        .client_events
        .iter()
        .filter_map(|(at, e)| match e {
            Event::Frame(f) => Some((f.frame_id, *at)),
            _ => None,
        })
        .collect();
    let mut checked = 0;
    for &k in &rekeys {
        for i in 0..r.sent as u64 {
            let sent = t0 + interval * i as u32;
            if sent + Duration::from_secs(2) < k || sent > k + Duration::from_secs(2) {
                continue;
            }
            checked += 1;
            let at = delivered
                .get(&i)
                .unwrap_or_else(|| panic!("frame {i} lost near a rekey"));
            assert!(
                *at <= sent + Duration::from_millis(100),
                "frame {i} late near a rekey"
            );
        }
    }
    assert!(checked >= 1000, "{checked} frames checked");
    assert!(r.on_time * 1000 >= r.sent * 999, "{}/{}", r.on_time, r.sent);
}
