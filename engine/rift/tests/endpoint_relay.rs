//! A host endpoint serves a direct and a relayed client at once, sans-IO on a virtual clock,
//! with the relay played by the test (it admits a PRESENT that carries a binding, answers
//! LEASE_ACK, and forwards FORWARD datagrams between the two bound addresses unchanged). Both
//! ends present their own lease; the handshake itself crosses inside FORWARD; a relay that
//! rejects the lease closes the client with the typed reason. The real relay process is
//! exercised in `relay/tests/endpoints.rs`.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use wavry_rift::{
    crypto::PeerPolicy,
    identity::IdentityKey,
    relay_client::{RelayClientConfig, RelayLease},
    session::{CloseReason, Endpoint, Event, Role, Session, SessionConfig},
    wire::{LeaseAck, LeasePresent, PeerRole, RELAY_MAGIC, RejectReason, RelayHeader, RelayType},
};

const SID: [u8; 16] = [0x42; 16];

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// The toy relay: role → bound address; `reject` answers every PRESENT with that reason.
#[derive(Default)]
struct ToyRelay {
    bound: HashMap<u8, SocketAddr>,
    reject: Option<RejectReason>,
    forwarded: u64,
    presents: u64,
}

impl ToyRelay {
    /// What the relay sends in answer to `dg` from `from`.
    fn on(&mut self, from: SocketAddr, dg: &[u8]) -> Option<(SocketAddr, Vec<u8>)> {
        let h = RelayHeader::decode(dg).ok()?;
        assert_eq!(h.session_id, SID);
        let payload = &dg[RelayHeader::LEN..];
        match h.kind {
            RelayType::LeasePresent => {
                self.presents += 1;
                let p = LeasePresent::decode(payload).unwrap();
                assert!(p.binding.is_some(), "every PRESENT is signed");
                let mut out = vec![0u8; 36];
                RelayHeader {
                    kind: if self.reject.is_some() {
                        RelayType::LeaseReject
                    } else {
                        RelayType::LeaseAck
                    },
                    flags: 0,
                    session_id: SID,
                }
                .encode(&mut out)
                .unwrap();
                if let Some(r) = self.reject {
                    let n = r.encode(&mut out[20..]).unwrap();
                    out.truncate(20 + n);
                } else {
                    self.bound.insert(p.role as u8, from);
                    LeaseAck {
                        expires_unix_ms: 2_000_000_000_000,
                        soft_limit_kbps: 10_000,
                        hard_limit_kbps: 20_000,
                    }
                    .encode(&mut out[20..])
                    .unwrap();
                }
                Some((from, out))
            }
            RelayType::Forward => {
                let (&role, _) = self.bound.iter().find(|(_, a)| **a == from)?;
                let to = *self.bound.get(&(1 - role))?;
                self.forwarded += 1;
                Some((to, dg.to_vec()))
            }
            _ => None,
        }
    }
}

const HOST: &str = "10.0.0.1:4433";
const RELAY: &str = "10.0.0.9:4000";
const RELAYED: &str = "10.0.0.2:5000";
const DIRECT: &str = "10.0.0.3:5000";

fn lease(role: PeerRole) -> RelayLease {
    RelayLease {
        relay_addr: addr(RELAY),
        relay_id: "wr-test".into(),
        session_id: SID,
        role,
        token: "v4.public.test-lease".into(),
    }
}

struct World {
    ep: Endpoint,
    relayed: Session,
    direct: Session,
    relay: ToyRelay,
    now: Instant,
    /// The relayed client's address as the relay sees it (its NAT's outside port).
    relayed_at: SocketAddr,
}

impl World {
    fn new(reject: Option<RejectReason>) -> Self {
        let host_key = Arc::new(IdentityKey::from_seed([1; 32]).unwrap());
        let (rk, dk) = (
            Arc::new(IdentityKey::from_seed([2; 32]).unwrap()),
            Arc::new(IdentityKey::from_seed([3; 32]).unwrap()),
        );
        let now = Instant::now();
        let mut ep = Endpoint::new(
            SessionConfig::new(Role::Host, PeerPolicy::AllowList(vec![rk.id(), dk.id()])),
            host_key.clone(),
            4,
        );
        ep.add_relay_path(
            now,
            1_800_000_000_000,
            lease(PeerRole::Server),
            RelayClientConfig::default(),
        )
        .unwrap();
        let ccfg = || SessionConfig::new(Role::Client, PeerPolicy::Pinned(host_key.id()));
        let relayed = Session::client_via_relay(
            now,
            1_800_000_000_000,
            ccfg(),
            rk,
            lease(PeerRole::Client),
            RelayClientConfig::default(),
        )
        .unwrap();
        let direct = Session::client(now, ccfg(), dk, addr(HOST)).unwrap();
        Self {
            ep,
            relayed,
            direct,
            relay: ToyRelay {
                reject,
                ..ToyRelay::default()
            },
            now,
            relayed_at: addr(RELAYED),
        }
    }

    /// Delivers everything in flight (zero latency) until quiet, then advances 5 ms.
    fn step(&mut self) {
        let mut buf = vec![0u8; 65536];
        let mut wire: Vec<(SocketAddr, SocketAddr, Vec<u8>)> = Vec::new();
        for _ in 0..100 {
            let now = self.now;
            while let Some(t) = self.ep.poll_transmit(now, &mut buf, 1) {
                wire.push((addr(HOST), t.destination, buf[..t.len].to_vec()));
            }
            while let Some(t) = self.relayed.poll_transmit(now, &mut buf, 1) {
                wire.push((self.relayed_at, t.destination, buf[..t.len].to_vec()));
            }
            while let Some(t) = self.direct.poll_transmit(now, &mut buf, 1) {
                wire.push((addr(DIRECT), t.destination, buf[..t.len].to_vec()));
            }
            if wire.is_empty() {
                break;
            }
            for (from, to, mut d) in std::mem::take(&mut wire) {
                if to == addr(RELAY) {
                    if let Some((to2, d2)) = self.relay.on(from, &d) {
                        wire.push((addr(RELAY), to2, d2));
                    }
                } else if to == addr(HOST) {
                    self.ep.handle_datagram(now, from, None, None, &mut d);
                } else if to == self.relayed_at {
                    // The only thing that reaches the relayed client is the relay.
                    assert_eq!(from, addr(RELAY));
                    assert_eq!(d[0], RELAY_MAGIC, "relayed traffic is always wrapped");
                    self.relayed.handle_datagram(now, from, &mut d);
                } else if to == addr(DIRECT) {
                    assert_ne!(d[0], RELAY_MAGIC, "direct traffic is never wrapped");
                    self.direct.handle_datagram(now, from, &mut d);
                }
                // Anything else (the relayed client's old outside port) is lost.
            }
        }
        self.now += Duration::from_millis(5);
        self.ep.handle_timeout(self.now);
        self.relayed.handle_timeout(self.now);
        self.direct.handle_timeout(self.now);
    }
}

#[test]
fn one_endpoint_serves_a_direct_and_a_relayed_client() {
    let mut w = World::new(None);
    for _ in 0..200 {
        w.step();
        if w.relayed.is_connected() && w.direct.is_connected() {
            break;
        }
    }
    assert!(w.relayed.is_connected(), "relayed client connected");
    assert!(w.direct.is_connected(), "direct client connected");
    assert_eq!(w.ep.len(), 2);
    // Both ends presented their own lease (fault 4) and the handshake went through FORWARD.
    assert_eq!(w.relay.bound.len(), 2);
    assert!(
        w.relay.forwarded >= 3,
        "msg1..msg3 and Hello crossed the relay"
    );
    let remotes: Vec<_> =
        w.ep.handles()
            .collect::<Vec<_>>()
            .into_iter()
            .map(|h| w.ep.session_mut(h).unwrap().remote())
            .collect();
    assert!(remotes.contains(&addr(RELAY)) && remotes.contains(&addr(DIRECT)));
    // The relay polices at its hard limit (20 Mbit/s in its ack) without queueing: the
    // relayed sessions keep DELTA at 70 % of it on both ends; the direct one is not capped.
    let cap = 14_000_000;
    let handles: Vec<_> = w.ep.handles().collect();
    for h in handles {
        let s = w.ep.session_mut(h).unwrap();
        let (relayed, target) = (s.remote() == addr(RELAY), s.target_bitrate());
        if relayed {
            assert!(target <= cap, "relayed host session at {target} bit/s");
        } else {
            assert!(target > cap, "direct session capped to {target} bit/s");
        }
    }
    assert!(w.relayed.target_bitrate() <= cap);
    let mut relay_events = Vec::new();
    while let Some(e) = w.ep.poll_relay_event() {
        relay_events.push(e);
    }
    assert!(matches!(relay_events[..], [(SID, _), ..]));
    assert_eq!(w.ep.relay_path_state(addr(RELAY), SID), Some((true, false)));
    assert_eq!(w.relayed.relay_stats().unwrap().acks, 1);
    // Traffic keeps flowing through the relay: keepalives and feedback for a second.
    let before = w.relay.forwarded;
    for _ in 0..200 {
        w.step();
    }
    assert!(w.relay.forwarded > before);
    assert!(w.relayed.is_connected() && w.direct.is_connected());
}

/// The relayed client's NAT changes its outside port mid-stream (the client cannot know): the
/// relay drops its datagrams from the unbound port and sends the host's frames to the old
/// one. The stream's silence makes the client re-present, signed, from the new port within
/// `min_silence` (200 ms); frames resume well within a second of the change.
#[test]
fn a_relayed_stream_resumes_within_a_second_of_a_nat_port_change() {
    let mut w = World::new(None);
    for _ in 0..200 {
        w.step();
        if w.relayed.is_connected() {
            break;
        }
    }
    assert!(w.relayed.is_connected());
    let h =
        w.ep.handles()
            .collect::<Vec<_>>()
            .into_iter()
            .find(|&h| w.ep.session_mut(h).unwrap().remote() == addr(RELAY))
            .unwrap();
    let interval = Duration::from_millis(15);
    let mut data = vec![0x5a; 6000];
    // Frame index in the first 8 bytes: a frame counts as resumed only if it was sent after
    // the change (not one received before it and played out later).
    let (mut sent, mut first_after, mut last_got) = (0u64, None, None);
    let (mut changed_at, mut resumed_after) = (None, None);
    for step in 0..600u32 {
        if step == 200 {
            w.relayed_at = addr("10.0.0.2:5001");
            changed_at = Some(w.now);
            first_after = Some(sent);
        }
        if step % 3 == 0 {
            data[..8].copy_from_slice(&sent.to_be_bytes());
            let meta = wavry_rift::session::FrameMeta {
                timestamp_us: sent * 15_000,
                keyframe: true,
                capture_us: 0,
                encode_us: 0,
            };
            w.ep.session_mut(h)
                .unwrap()
                .send_frame(w.now, &data, meta, interval)
                .unwrap();
            sent += 1;
        }
        w.step();
        while let Some(e) = w.relayed.poll_event() {
            assert!(!matches!(e, Event::Closed(_)), "{e:?}");
            if let Event::Frame(f) = e {
                let i = u64::from_be_bytes(f.data[..8].try_into().unwrap());
                last_got = Some(i);
                if let (Some(c), Some(first), None) = (changed_at, first_after, resumed_after)
                    && i >= first
                {
                    resumed_after = Some(w.now - c);
                }
            }
        }
        if step == 199 {
            assert!(last_got.is_some(), "frames flowed before the change");
        }
    }
    let resumed = resumed_after.expect("frames resumed after the port change");
    assert!(
        resumed < Duration::from_secs(1),
        "frames resumed {resumed:?} after the change"
    );
    assert!(
        last_got.is_some_and(|i| i + 3 >= sent),
        "frames kept flowing: last {last_got:?} of {sent}"
    );
    assert_eq!(
        w.relay.bound.get(&(PeerRole::Client as u8)),
        Some(&w.relayed_at),
        "the relay moved the client's binding"
    );
    assert!(w.relayed.relay_stats().unwrap().represents >= 1);
}

#[test]
fn a_rejected_lease_closes_the_client_with_the_reason() {
    let mut w = World::new(Some(RejectReason::WrongRelay));
    for _ in 0..20 {
        w.step();
    }
    let closed = std::iter::from_fn(|| w.relayed.poll_event()).find_map(|e| match e {
        Event::Closed(r) => Some(r),
        _ => None,
    });
    assert_eq!(
        closed,
        Some(CloseReason::RelayRejected(RejectReason::WrongRelay))
    );
    assert!(w.direct.is_connected(), "the direct client is unaffected");
    assert_eq!(w.ep.relay_path_state(addr(RELAY), SID), Some((false, true)));
}

/// The driver runs timers before it polls for datagrams. A relay path whose PRESENT is due
/// (unanswered, retransmission time passed) once made `handle_timeout` re-arm a timer that
/// was due again at once, so it never returned and the host hung; the PRESENT must wait for
/// `poll_transmit` instead, and each retransmission go out exactly once.
#[test]
fn a_due_present_waits_for_poll_transmit_and_handle_timeout_returns() {
    let mut w = World::new(None);
    let mut buf = vec![0u8; 2048];
    let mut presents = 0;
    for step in 0..8u64 {
        let now = w.now + Duration::from_millis(300 * step);
        w.ep.handle_timeout(now);
        while let Some(t) = w.ep.poll_transmit(now, &mut buf, 1) {
            assert_eq!(t.destination, addr(RELAY));
            let h = RelayHeader::decode(&buf[..t.len]).unwrap();
            assert_eq!(h.kind, RelayType::LeasePresent);
            presents += 1;
        }
    }
    // Unanswered: the first send, then retransmissions at 250 ms doubling (250, 750, 1750 ms
    // after it), each once, within the 2.1 s walked.
    assert_eq!(presents, 4);
}
