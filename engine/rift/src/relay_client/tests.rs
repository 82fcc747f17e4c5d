//! The relay client on a virtual clock, against a relay played by the test (decoding what the
//! client sends and checking the binding signature with the holder's Wavry ID).

use super::*;

const T0_UNIX: u64 = 1_800_000_000_000;

fn lease() -> RelayLease {
    RelayLease {
        relay_addr: "127.0.0.1:4000".parse().unwrap(),
        relay_id: "wr-0123".into(),
        session_id: [7; 16],
        role: PeerRole::Client,
        token: "v4.public.first".into(),
    }
}

fn client(t0: Instant) -> (RelayClient, Arc<IdentityKey>) {
    let key = Arc::new(IdentityKey::from_seed([3; 32]).unwrap());
    let c = RelayClient::new(
        t0,
        T0_UNIX,
        lease(),
        key.clone(),
        RelayClientConfig::default(),
    )
    .unwrap();
    (c, key)
}

/// What the relay would see.
#[derive(Debug, PartialEq, Eq)]
enum Seen {
    Present { token: String, ts: u64 },
    Renew { token: Option<String> },
}

fn read(buf: &[u8], key: &IdentityKey) -> Seen {
    let h = RelayHeader::decode(buf).unwrap();
    assert_eq!(h.session_id, [7; 16]);
    let payload = &buf[RelayHeader::LEN..];
    match h.kind {
        RelayType::LeasePresent => {
            let p = LeasePresent::decode(payload).unwrap();
            assert_eq!(p.role, PeerRole::Client);
            let b = p.binding.expect("a PRESENT is always signed");
            let mut msg = [0u8; BINDING_MESSAGE_MAX];
            let n = binding_message(
                &[7; 16],
                PeerRole::Client,
                "wr-0123",
                b.timestamp_ms,
                &mut msg,
            )
            .unwrap();
            key.id().verify(&msg[..n], &b.signature).unwrap();
            Seen::Present {
                token: p.token.to_owned(),
                ts: b.timestamp_ms,
            }
        }
        RelayType::LeaseRenew if payload.is_empty() => Seen::Renew { token: None },
        RelayType::LeaseRenew => {
            let p = LeasePresent::decode(payload).unwrap();
            Seen::Renew {
                token: Some(p.token.to_owned()),
            }
        }
        other => panic!("unexpected {other:?}"),
    }
}

fn ack(expires_unix_ms: u64) -> [u8; 16] {
    let mut b = [0u8; 16];
    LeaseAck {
        expires_unix_ms,
        soft_limit_kbps: 1000,
        hard_limit_kbps: 2000,
    }
    .encode(&mut b)
    .unwrap();
    b
}

/// Sends everything due at `now`; returns what the relay saw.
fn drain(c: &mut RelayClient, now: Instant, key: &IdentityKey) -> Vec<Seen> {
    let mut out = Vec::new();
    let mut buf = [0u8; 1500];
    c.handle_timeout(now);
    while let Some(n) = c.poll_transmit(now, &mut buf) {
        out.push(read(&buf[..n], key));
    }
    out
}

#[test]
fn presents_signed_and_retransmits_with_backoff_until_acked() {
    let t0 = Instant::now();
    let (mut c, key) = client(t0);
    assert_eq!(
        drain(&mut c, t0, &key),
        vec![Seen::Present {
            token: "v4.public.first".into(),
            ts: T0_UNIX
        }]
    );
    // Nothing more until the retransmission timeout, then backoff doubles.
    assert_eq!(c.poll_timeout(), Some(t0 + Duration::from_millis(250)));
    assert!(drain(&mut c, t0 + Duration::from_millis(249), &key).is_empty());
    let t1 = t0 + Duration::from_millis(250);
    assert_eq!(drain(&mut c, t1, &key).len(), 1);
    assert_eq!(c.poll_timeout(), Some(t1 + Duration::from_millis(500)));
    assert!(!c.is_admitted());
    c.handle_control(t1, RelayType::LeaseAck, &ack(T0_UNIX + 300_000));
    assert!(c.is_admitted());
    assert!(matches!(c.poll_event(), Some(RelayEvent::Admitted(a)) if a.hard_limit_kbps == 2000));
    assert_eq!(c.stats().presents_sent, 2);
    // No more sends: the next timer is the renewal, with a quarter of the admission left.
    let renew = c.poll_timeout().unwrap();
    assert_eq!(
        renew,
        t1 + Duration::from_millis((300_000 - 250) * 3 / 4 + 1)
    );
    assert!(
        drain(
            &mut c,
            renew.checked_sub(Duration::from_millis(1)).unwrap(),
            &key
        )
        .is_empty()
    );
}

#[test]
fn gives_up_after_bounded_attempts() {
    let t0 = Instant::now();
    let (mut c, key) = client(t0);
    let mut now = t0;
    let mut sent = 0;
    loop {
        sent += drain(&mut c, now, &key).len();
        if c.is_failed() {
            break;
        }
        now = c.poll_timeout().unwrap();
        assert!(now < t0 + Duration::from_secs(60), "bounded");
    }
    assert_eq!(sent, 10);
    assert_eq!(c.poll_event(), Some(RelayEvent::GaveUp));
    assert_eq!(c.poll_timeout(), None);
}

#[test]
fn reject_is_surfaced_typed_and_ends_the_path() {
    let t0 = Instant::now();
    let (mut c, key) = client(t0);
    drain(&mut c, t0, &key);
    c.handle_control(t0, RelayType::LeaseReject, &[0, 3]);
    assert!(c.is_failed());
    assert_eq!(
        c.poll_event(),
        Some(RelayEvent::Rejected(RejectReason::WrongRelay))
    );
    assert_eq!(c.poll_timeout(), None);
    assert!(drain(&mut c, t0 + Duration::from_secs(5), &key).is_empty());
    // Garbage is counted, never acted on.
    let (mut c, _) = client(t0);
    c.handle_control(t0, RelayType::LeaseAck, &[1, 2, 3]);
    c.handle_control(t0, RelayType::LeaseReject, &[]);
    c.handle_control(t0, RelayType::Forward, &[]);
    assert_eq!(c.stats().malformed, 3);
    assert!(!c.is_failed() && !c.is_admitted());
}

#[test]
fn renews_empty_then_asks_for_a_fresh_lease_and_renews_with_it() {
    let t0 = Instant::now();
    let (mut c, key) = client(t0);
    drain(&mut c, t0, &key);
    c.handle_control(t0, RelayType::LeaseAck, &ack(T0_UNIX + 100_000));
    let at = c.poll_timeout().unwrap();
    assert_eq!(at, t0 + Duration::from_secs(75));
    assert_eq!(drain(&mut c, at, &key), vec![Seen::Renew { token: None }]);
    // The relay extends up to the lease's exp only: same expiry → a fresh lease is needed.
    c.handle_control(at, RelayType::LeaseAck, &ack(T0_UNIX + 100_000));
    let evs: Vec<_> = std::iter::from_fn(|| c.poll_event()).collect();
    assert!(evs.contains(&RelayEvent::LeaseEnding {
        expires_unix_ms: T0_UNIX + 100_000
    }));
    assert_eq!(c.poll_timeout(), None, "no pointless renewals");
    c.renew_with(at, "v4.public.second".into()).unwrap();
    assert_eq!(
        drain(&mut c, at, &key),
        vec![Seen::Renew {
            token: Some("v4.public.second".into())
        }]
    );
    c.handle_control(at, RelayType::LeaseAck, &ack(T0_UNIX + 900_000));
    assert!(c.poll_timeout().is_some());
    // The fresh lease is the one presented from now on.
    c.local_address_changed(at);
    assert!(matches!(
        &drain(&mut c, at, &key)[..],
        [Seen::Present { token, .. }] if token == "v4.public.second"
    ));
    assert!(c.renew_with(at, String::new()).is_err());
}

#[test]
fn address_change_and_silence_re_present_signed_with_increasing_timestamps() {
    let t0 = Instant::now();
    let (mut c, key) = client(t0);
    let Seen::Present { ts: ts0, .. } = drain(&mut c, t0, &key).remove(0) else {
        panic!()
    };
    c.handle_control(t0, RelayType::LeaseAck, &ack(T0_UNIX + 300_000));
    // An explicit change re-presents at once, with a later timestamp even on the same ms.
    c.local_address_changed(t0);
    let Seen::Present { ts: ts1, .. } = drain(&mut c, t0, &key).remove(0) else {
        panic!()
    };
    assert!(ts1 > ts0);
    c.handle_control(t0, RelayType::LeaseAck, &ack(T0_UNIX + 300_000));
    // Before any traffic, silence means nothing (the peer may not be there yet).
    assert!(drain(&mut c, t0 + Duration::from_secs(5), &key).is_empty());
    // Traffic flowed, then stopped: after the silence interval, a signed re-present.
    let t1 = t0 + Duration::from_secs(6);
    c.note_received(t1);
    assert!(drain(&mut c, t1 + Duration::from_millis(999), &key).is_empty());
    let t2 = t1 + Duration::from_secs(1);
    assert!(matches!(&drain(&mut c, t2, &key)[..], [Seen::Present { ts, .. }] if *ts > ts1));
    assert_eq!(c.stats().represents, 2);
    c.handle_control(t2, RelayType::LeaseAck, &ack(T0_UNIX + 300_000));
    // Still silent: the next re-present waits twice as long.
    assert!(drain(&mut c, t2 + Duration::from_millis(1999), &key).is_empty());
    assert_eq!(drain(&mut c, t2 + Duration::from_secs(2), &key).len(), 1);
}

/// The silence that means a broken path follows the traffic: a 60 fps stream re-presents
/// after `min_silence` (frames resume well within a second of a NAT rebinding), a session
/// living on 500 ms keepalives never re-presents between them, and waits `silence`.
#[test]
fn the_silence_before_a_re_present_follows_the_gaps_between_arrivals() {
    let t0 = Instant::now();
    let cfg = RelayClientConfig::default();
    let admitted = |t: Instant| {
        let (mut c, key) = client(t);
        drain(&mut c, t, &key);
        c.handle_control(t, RelayType::LeaseAck, &ack(T0_UNIX + 300_000));
        (c, key)
    };
    let (mut stream, key) = admitted(t0);
    let mut t = t0;
    for _ in 0..120 {
        t += Duration::from_millis(16);
        stream.note_received(t);
        assert!(drain(&mut stream, t, &key).is_empty());
    }
    let quiet = t + cfg.min_silence.saturating_sub(Duration::from_millis(1));
    assert!(drain(&mut stream, quiet, &key).is_empty());
    let due = stream.poll_timeout().unwrap();
    assert_eq!(due, t + cfg.min_silence);
    assert!(matches!(
        &drain(&mut stream, due, &key)[..],
        [Seen::Present { .. }]
    ));
    // Unanswered by traffic: the next wait doubles.
    stream.handle_control(due, RelayType::LeaseAck, &ack(T0_UNIX + 300_000));
    assert_eq!(stream.poll_timeout().unwrap(), due + cfg.min_silence * 2);

    let (mut idle, key) = admitted(t0);
    let mut t = t0;
    for _ in 0..10 {
        t += Duration::from_millis(500);
        idle.note_received(t);
        assert!(drain(&mut idle, t + Duration::from_millis(499), &key).is_empty());
    }
    assert_eq!(idle.poll_timeout().unwrap(), t + cfg.silence);
    assert_eq!(idle.stats().represents, 0);
}

#[test]
fn bad_leases_are_refused_up_front() {
    let key = Arc::new(IdentityKey::from_seed([3; 32]).unwrap());
    let t0 = Instant::now();
    let cfg = RelayClientConfig::default();
    let mut l = lease();
    l.session_id = [0; 16];
    assert_eq!(
        RelayClient::new(t0, 0, l, key.clone(), cfg).unwrap_err(),
        RelayClientError::NilSession
    );
    let mut l = lease();
    l.relay_id = "r".repeat(MAX_RELAY_ID + 1);
    assert_eq!(
        RelayClient::new(t0, 0, l, key.clone(), cfg).unwrap_err(),
        RelayClientError::RelayId
    );
    let mut l = lease();
    l.token.clear();
    assert_eq!(
        RelayClient::new(t0, 0, l, key, cfg).unwrap_err(),
        RelayClientError::Token
    );
}
