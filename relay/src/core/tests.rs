//! Every admission and forwarding rule of the core, on a virtual clock.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use time::OffsetDateTime;
use uuid::Uuid;
use wavry_rift::identity::IdentityKey;
use wavry_rift::lease::{LeaseClaims, LeaseRole, LeaseSigner, LeaseVerifier};
use wavry_rift::wire::{PeerRole, RejectReason};

use super::stats::Stats;
use super::{BindingEvent, CoreConfig, LeaseAuth, Now, REJECT_LEN, REPLY_MAX, RelayCore, Verdict};
use crate::peer::{Answer, decode_answer, encode_forward, encode_present};

const RELAY_ID: &str = "relay-test";
const T0_MS: i64 = 1_800_000_000_000;
const SID: [u8; 16] = [0x11; 16];

struct World {
    master: LeaseSigner,
    client: IdentityKey,
    server: IdentityKey,
    core: RelayCore,
    now: Now,
    reply: [u8; REPLY_MAX],
}

fn key(seed: u8) -> IdentityKey {
    IdentityKey::from_seed([seed; 32]).unwrap()
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn world_with(tune: impl FnOnce(&mut CoreConfig)) -> World {
    let master = LeaseSigner::new(&key(1), None).unwrap();
    let mut cfg = CoreConfig::new(RELAY_ID);
    tune(&mut cfg);
    let verifier = LeaseVerifier::new(
        *master.public_key(),
        Some(master.key_id().to_owned()),
        RELAY_ID,
    );
    let core = RelayCore::new(
        cfg,
        LeaseAuth::Verify(verifier),
        Arc::new(Stats::default()),
        0,
    );
    World {
        master,
        client: key(2),
        server: key(3),
        core,
        now: Now {
            mono_ns: 0,
            unix_ms: T0_MS,
        },
        reply: [0; REPLY_MAX],
    }
}

fn world() -> World {
    world_with(|_| {})
}

struct Lease {
    sid: [u8; 16],
    role: LeaseRole,
    holder: String,
    sub: Option<String>,
    rid: String,
    ttl_s: i64,
    iat_offset_s: i64,
    hlimit: Option<u32>,
    slimit: Option<u32>,
}

impl World {
    fn wall(&self) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp_nanos(i128::from(self.now.unix_ms) * 1_000_000).unwrap()
    }

    #[allow(clippy::unused_self)] // reads like the other helpers
    fn lease(&self, who: &IdentityKey, role: LeaseRole) -> Lease {
        Lease {
            sid: SID,
            role,
            holder: who.id().to_string(),
            sub: None,
            rid: RELAY_ID.into(),
            ttl_s: 900,
            iat_offset_s: 0,
            hlimit: None,
            slimit: None,
        }
    }

    fn issue_with(&self, signer: &LeaseSigner, l: &Lease) -> String {
        let now = self.wall() + time::Duration::seconds(l.iat_offset_s);
        signer
            .issue(&LeaseClaims {
                sub: l.sub.clone().unwrap_or_else(|| l.holder.clone()),
                wavry_id: Some(l.holder.clone()),
                sid: Uuid::from_bytes(l.sid),
                role: l.role,
                rid: l.rid.clone(),
                kid: Some(signer.key_id().to_owned()),
                jti: None,
                iat: now,
                nbf: now - time::Duration::seconds(5),
                exp: now + time::Duration::seconds(l.ttl_s),
                slimit: l.slimit,
                hlimit: l.hlimit,
            })
            .unwrap()
    }

    fn issue(&self, l: &Lease) -> String {
        self.issue_with(&self.master, l)
    }

    fn advance(&mut self, d: Duration) {
        self.now.mono_ns += u64::try_from(d.as_nanos()).unwrap();
        self.now.unix_ms += i64::try_from(d.as_millis()).unwrap();
    }

    fn send(&mut self, from: SocketAddr, datagram: &[u8]) -> Verdict {
        self.core
            .on_datagram(self.now, from, datagram, &mut self.reply)
    }

    /// PRESENT (or RENEW) with an optional binding by `signer`, at timestamp `ts`.
    #[allow(clippy::too_many_arguments)]
    fn present_raw(
        &mut self,
        from: SocketAddr,
        renew: bool,
        sid: [u8; 16],
        role: PeerRole,
        token: &str,
        signer: Option<&IdentityKey>,
        ts: u64,
    ) -> (Verdict, Option<Answer>, usize) {
        let mut buf = vec![0u8; 20 + 3 + token.len() + 72];
        let n = encode_present(
            &mut buf,
            renew,
            sid,
            role,
            token,
            signer.map(|k| (k, RELAY_ID, ts)),
        )
        .unwrap();
        let v = self.send(from, &buf[..n]);
        let answer = match v {
            Verdict::Reply(dst, len) => {
                assert_eq!(dst, from, "replies go only to the source");
                assert!(len <= n, "a reply is never larger than the request");
                Some(decode_answer(&self.reply[..len]).unwrap().1)
            }
            Verdict::Drop => None,
            Verdict::Forward(_) => panic!("a presentation is never forwarded"),
        };
        (v, answer, n)
    }

    fn ts(&self) -> u64 {
        u64::try_from(self.now.unix_ms).unwrap()
    }

    /// A properly signed PRESENT by the lease holder.
    fn present(&mut self, from: SocketAddr, who: Who, token: &str) -> Option<Answer> {
        let (k, role) = match who {
            Who::Client => (key(2), PeerRole::Client),
            Who::Server => (key(3), PeerRole::Server),
        };
        let ts = self.ts();
        self.present_raw(from, false, SID, role, token, Some(&k), ts)
            .1
    }

    fn forward(&mut self, from: SocketAddr, payload: &[u8]) -> Verdict {
        let mut buf = [0u8; 1500];
        let n = encode_forward(&mut buf, SID, payload).unwrap();
        self.send(from, &buf[..n])
    }

    /// Admits the client at `c` with a lease of `client_ttl_s` and the server at `s` (900 s);
    /// their tokens.
    fn admit_with_client_ttl(
        &mut self,
        c: SocketAddr,
        s: SocketAddr,
        client_ttl_s: i64,
    ) -> (String, String) {
        let mut l = self.lease(&self.client, LeaseRole::Client);
        l.ttl_s = client_ttl_s;
        let ct = self.issue(&l);
        let st = self.issue(&self.lease(&self.server, LeaseRole::Server));
        assert!(matches!(
            self.present(c, Who::Client, &ct),
            Some(Answer::Ack(_))
        ));
        assert!(matches!(
            self.present(s, Who::Server, &st),
            Some(Answer::Ack(_))
        ));
        (ct, st)
    }

    fn admit_pair(&mut self, c: SocketAddr, s: SocketAddr) -> (String, String) {
        self.admit_with_client_ttl(c, s, 900)
    }
}

#[derive(Clone, Copy)]
enum Who {
    Client,
    Server,
}

const C: &str = "198.51.100.1:40000";
const S: &str = "203.0.113.9:50000";

#[test]
fn admitted_pair_forwards_both_ways_and_retransmissions_pass() {
    let mut w = world();
    let (c, s) = (addr(C), addr(S));
    w.admit_pair(c, s);
    assert_eq!(w.forward(c, b"hello"), Verdict::Forward(s));
    assert_eq!(w.forward(s, b"world"), Verdict::Forward(c));
    // Same payload again (a NACK retransmission or a handshake retry reusing packet id 1):
    // a blind relay keeps no replay window, so it passes.
    let retx = b"RI\x00\x01 same packet id";
    assert_eq!(w.forward(c, retx), Verdict::Forward(s));
    assert_eq!(w.forward(c, retx), Verdict::Forward(s));
    assert_eq!(w.core.stats().packets_forwarded.get(), 4);
    assert_eq!(w.core.stats().lease_verifications.get(), 2);
    assert_eq!(w.core.session_count(), 1);
}

#[test]
fn half_open_session_forwards_nothing() {
    let mut w = world();
    let c = addr(C);
    let ct = w.issue(&w.lease(&w.client, LeaseRole::Client));
    assert!(matches!(
        w.present(c, Who::Client, &ct),
        Some(Answer::Ack(_))
    ));
    assert_eq!(w.forward(c, b"x"), Verdict::Drop);
    assert_eq!(w.core.stats().session_not_active_packets.get(), 1);
}

#[test]
fn forged_expired_foreign_and_wrong_role_leases_are_rejected_with_their_reason() {
    let mut w = world_with(|c| c.reject_per_ip_per_s = 100.0);
    let c = addr(C);
    let k = key(2);
    let ts = w.ts();
    // Forged: signed by a key that is not the master's.
    let forger = LeaseSigner::new(&key(9), Some(w.master.key_id().to_owned())).unwrap();
    let forged = w.issue_with(&forger, &w.lease(&w.client, LeaseRole::Client));
    let (_, a, _) = w.present_raw(c, false, SID, PeerRole::Client, &forged, Some(&k), ts);
    assert_eq!(a, Some(Answer::Reject(RejectReason::InvalidSignature)));
    // Expired: issued long ago.
    let mut l = w.lease(&w.client, LeaseRole::Client);
    l.iat_offset_s = -1000;
    let expired = w.issue(&l);
    let (_, a, _) = w.present_raw(c, false, SID, PeerRole::Client, &expired, Some(&k), ts);
    assert_eq!(a, Some(Answer::Reject(RejectReason::Expired)));
    // Foreign relay.
    let mut l = w.lease(&w.client, LeaseRole::Client);
    l.rid = "another-relay".into();
    let foreign = w.issue(&l);
    let (_, a, _) = w.present_raw(c, false, SID, PeerRole::Client, &foreign, Some(&k), ts);
    assert_eq!(a, Some(Answer::Reject(RejectReason::WrongRelay)));
    // Wrong role: a server lease presented in the client slot.
    let server_lease = w.issue(&w.lease(&w.client, LeaseRole::Server));
    let (_, a, _) = w.present_raw(c, false, SID, PeerRole::Client, &server_lease, Some(&k), ts);
    assert_eq!(a, Some(Answer::Reject(RejectReason::InvalidSignature)));
    // Another session's lease.
    let mut l = w.lease(&w.client, LeaseRole::Client);
    l.sid = [0x22; 16];
    let other = w.issue(&l);
    let (_, a, _) = w.present_raw(c, false, SID, PeerRole::Client, &other, Some(&k), ts);
    assert_eq!(a, Some(Answer::Reject(RejectReason::InvalidSignature)));
    // Not a token at all.
    let (_, a, _) = w.present_raw(
        c,
        false,
        SID,
        PeerRole::Client,
        "v4.public.garbage",
        Some(&k),
        ts,
    );
    assert_eq!(a, Some(Answer::Reject(RejectReason::InvalidSignature)));
    let st = w.core.stats();
    assert_eq!(st.expired_lease_rejects.get(), 1);
    assert_eq!(st.wrong_relay_rejects.get(), 1);
    assert_eq!(w.core.session_count(), 0);
}

#[test]
fn stolen_token_from_another_address_cannot_take_the_binding() {
    let mut w = world();
    let (c, s) = (addr(C), addr(S));
    let (ct, _) = w.admit_pair(c, s);
    let thief = addr("192.0.2.66:1234");
    let ts = w.ts() + 1;
    // No signature at all.
    let (_, a, _) = w.present_raw(thief, false, SID, PeerRole::Client, &ct, None, ts);
    assert_eq!(a, Some(Answer::Reject(RejectReason::InvalidSignature)));
    // Signed by the thief's own key, not the holder's.
    let (_, a, _) = w.present_raw(thief, false, SID, PeerRole::Client, &ct, Some(&key(7)), ts);
    assert_eq!(a, Some(Answer::Reject(RejectReason::InvalidSignature)));
    // A captured PRESENT replayed byte for byte from another address: its timestamp is not
    // above the one already accepted.
    let old_ts = u64::try_from(T0_MS).unwrap();
    let (_, a, _) = w.present_raw(
        thief,
        false,
        SID,
        PeerRole::Client,
        &ct,
        Some(&key(2)),
        old_ts,
    );
    assert_eq!(a, Some(Answer::Reject(RejectReason::InvalidSignature)));
    assert_eq!(w.core.stats().replay_dropped_packets.get(), 1);
    // A signature far outside ±30 s.
    let (_, a, _) = w.present_raw(
        thief,
        false,
        SID,
        PeerRole::Client,
        &ct,
        Some(&key(2)),
        ts + 60_000,
    );
    assert_eq!(a, Some(Answer::Reject(RejectReason::InvalidSignature)));
    // The binding never moved: the thief cannot forward or receive.
    assert_eq!(w.forward(s, b"to client"), Verdict::Forward(c));
    assert_eq!(w.forward(thief, b"spoof"), Verdict::Drop);
    assert!(w.core.stats().binding_rejects.get() >= 3);
    assert_eq!(w.core.stats().nat_rebind_events.get(), 0);
    // The stolen token was answered from the cache: one verification per lease, not per try.
    assert_eq!(w.core.stats().lease_verifications.get(), 2);
}

#[test]
fn first_binding_needs_the_holder_signature_too() {
    let mut w = world();
    let c = addr(C);
    let ct = w.issue(&w.lease(&w.client, LeaseRole::Client));
    let ts = w.ts();
    let (_, a, _) = w.present_raw(c, false, SID, PeerRole::Client, &ct, None, ts);
    assert_eq!(a, Some(Answer::Reject(RejectReason::InvalidSignature)));
    let (_, a, _) = w.present_raw(c, false, SID, PeerRole::Client, &ct, Some(&key(3)), ts);
    assert_eq!(a, Some(Answer::Reject(RejectReason::InvalidSignature)));
    assert_eq!(w.core.session_count(), 0);
    // Re-presenting from the bound address needs no signature (a lost ACK's retransmission).
    let (_, a, _) = w.present_raw(c, false, SID, PeerRole::Client, &ct, Some(&key(2)), ts);
    assert!(matches!(a, Some(Answer::Ack(_))));
    let (_, a, _) = w.present_raw(c, false, SID, PeerRole::Client, &ct, None, ts);
    assert!(matches!(a, Some(Answer::Ack(_))));
}

#[test]
fn nat_rebinding_by_signed_re_present_moves_the_peer() {
    let mut w = world();
    let (c, s) = (addr(C), addr(S));
    let (ct, _) = w.admit_pair(c, s);
    w.advance(Duration::from_millis(500));
    let moved = addr("198.51.100.1:40777");
    assert!(matches!(
        w.present(moved, Who::Client, &ct),
        Some(Answer::Ack(_))
    ));
    assert_eq!(w.core.stats().nat_rebind_events.get(), 1);
    assert_eq!(w.forward(s, b"x"), Verdict::Forward(moved));
    assert_eq!(w.forward(moved, b"y"), Verdict::Forward(s));
    assert_eq!(w.forward(c, b"old address"), Verdict::Drop);
    assert_eq!(w.core.stats().unknown_peer_packets.get(), 1);
}

#[test]
fn idle_sessions_are_cleaned_up() {
    let mut w = world_with(|c| c.idle_timeout = Duration::from_secs(60));
    let (c, s) = (addr(C), addr(S));
    w.admit_pair(c, s);
    w.advance(Duration::from_secs(59));
    assert_eq!(w.forward(c, b"x"), Verdict::Forward(s));
    w.advance(Duration::from_secs(59));
    w.core.cleanup(w.now);
    assert_eq!(w.core.session_count(), 1, "activity 59 s ago is not idle");
    w.advance(Duration::from_secs(2));
    w.core.cleanup(w.now);
    assert_eq!(w.core.session_count(), 0);
    assert_eq!(w.core.stats().cleanup_idle_sessions.get(), 1);
    assert_eq!(w.forward(c, b"x"), Verdict::Drop);
    assert_eq!(w.core.stats().session_not_found_packets.get(), 1);
}

#[test]
fn token_expiry_is_tracked_and_renew_carries_a_fresh_lease() {
    let mut w = world_with(|c| c.idle_timeout = Duration::from_secs(3600));
    let (c, s) = (addr(C), addr(S));
    let mut l = w.lease(&w.client, LeaseRole::Client);
    l.ttl_s = 120;
    let ct = w.issue(&l);
    let mut l = w.lease(&w.server, LeaseRole::Server);
    l.ttl_s = 120;
    let st = w.issue(&l);
    let Some(Answer::Ack(ack)) = w.present(c, Who::Client, &ct) else {
        panic!()
    };
    assert_eq!(ack.expires_unix_ms, u64::try_from(T0_MS + 120_000).unwrap());
    assert!(matches!(
        w.present(s, Who::Server, &st),
        Some(Answer::Ack(_))
    ));
    // Renew from the bound address with a fresh lease extends the client.
    w.advance(Duration::from_secs(100));
    let fresh = w.issue(&w.lease(&w.client, LeaseRole::Client));
    let ts = w.ts();
    let (_, a, _) = w.present_raw(c, true, SID, PeerRole::Client, &fresh, None, ts);
    let Some(Answer::Ack(ack)) = a else {
        panic!("{a:?}")
    };
    assert_eq!(
        ack.expires_unix_ms,
        w.ts() + 300_000,
        "capped by --lease-duration-secs"
    );
    // Renew from another address, or for an unknown session, is refused.
    let (_, a, _) = w.present_raw(
        addr("192.0.2.1:9"),
        true,
        SID,
        PeerRole::Client,
        &fresh,
        None,
        ts,
    );
    assert_eq!(a, Some(Answer::Reject(RejectReason::InvalidSignature)));
    let (_, a, _) = w.present_raw(c, true, [0x33; 16], PeerRole::Client, &fresh, None, ts);
    assert_eq!(a, Some(Answer::Reject(RejectReason::Expired)));
    // The server's token (120 s) expires: forwarding in both directions stops.
    w.advance(Duration::from_secs(21));
    assert_eq!(w.forward(c, b"x"), Verdict::Drop);
    assert_eq!(w.forward(s, b"x"), Verdict::Drop);
    assert_eq!(w.core.stats().session_not_active_packets.get(), 2);
    // An empty RENEW (original layout) cannot extend past the token's own exp.
    let mut buf = [0u8; 20];
    wavry_rift::wire::RelayHeader {
        kind: wavry_rift::wire::RelayType::LeaseRenew,
        flags: 0,
        session_id: SID,
    }
    .encode(&mut buf)
    .unwrap();
    assert!(
        matches!(w.send(s, &buf), Verdict::Drop),
        "no reject: 20 B is smaller than one"
    );
    // (the unknown-session renew above was the first)
    assert_eq!(w.core.stats().expired_lease_rejects.get(), 2);
    // Cleanup drops the expired server and, once the client also expires, the session.
    w.core.cleanup(w.now);
    assert_eq!(w.core.session_count(), 1);
    w.advance(Duration::from_secs(400));
    w.core.cleanup(w.now);
    assert_eq!(w.core.session_count(), 0);
    assert_eq!(w.core.stats().cleanup_expired_sessions.get(), 1);
}

#[test]
fn a_role_is_locked_to_its_first_holder() {
    let mut w = world();
    let c = addr(C);
    let ct = w.issue(&w.lease(&w.client, LeaseRole::Client));
    assert!(matches!(
        w.present(c, Who::Client, &ct),
        Some(Answer::Ack(_))
    ));
    // A valid client lease for the same session but another holder.
    let other = key(5);
    let ot = w.issue(&w.lease(&other, LeaseRole::Client));
    let ts = w.ts() + 1;
    let (_, a, _) = w.present_raw(
        addr("192.0.2.5:5"),
        false,
        SID,
        PeerRole::Client,
        &ot,
        Some(&other),
        ts,
    );
    assert_eq!(a, Some(Answer::Reject(RejectReason::InvalidSignature)));
}

#[test]
fn max_sessions_and_load_shedding() {
    let mut w = world_with(|c| {
        c.max_sessions = 4;
        c.load_shed_pct = 75;
    });
    let mut acks = 0;
    let mut full = 0;
    for i in 0..5u8 {
        let mut l = w.lease(&w.client, LeaseRole::Client);
        l.sid = [0x40 + i; 16];
        let t = w.issue(&l);
        let ts = w.ts();
        let from = SocketAddr::from(([198, 51, 100, 10 + i], 4000));
        match w
            .present_raw(from, false, l.sid, PeerRole::Client, &t, Some(&key(2)), ts)
            .1
        {
            Some(Answer::Ack(_)) => acks += 1,
            Some(Answer::Reject(RejectReason::SessionFull)) => full += 1,
            other => panic!("{other:?}"),
        }
    }
    // 75 % of 4: the fourth session is already shed.
    assert_eq!((acks, full), (3, 2));
    assert_eq!(w.core.stats().overload_shed_packets.get(), 2);
    assert_eq!(w.core.stats().session_full_rejects.get(), 2);
    assert_eq!(w.core.session_count(), 3);
}

#[test]
fn session_bucket_follows_the_lease_limits() {
    let mut w = world();
    let (c, s) = (addr(C), addr(S));
    let mut l = w.lease(&w.client, LeaseRole::Client);
    l.slimit = Some(1000);
    l.hlimit = Some(1000);
    let ct = w.issue(&l);
    let st = w.issue(&w.lease(&w.server, LeaseRole::Server));
    assert!(matches!(
        w.present(c, Who::Client, &ct),
        Some(Answer::Ack(_))
    ));
    let Some(Answer::Ack(ack)) = w.present(s, Who::Server, &st) else {
        panic!()
    };
    // The latest lease set the session's limits (the server's: defaults).
    assert_eq!(ack.hard_limit_kbps, 100_000);
    let ct2 = w.issue(&l);
    let ts = w.ts() + 1;
    w.present_raw(c, false, SID, PeerRole::Client, &ct2, None, ts);
    // 1000 kbit/s = 125 000 B/s; burst = max(1 s at soft, 64 KiB) = 125 000 B.
    let payload = [0u8; 1000];
    let mut passed = 0;
    for _ in 0..200 {
        if w.forward(c, &payload) == Verdict::Forward(s) {
            passed += 1;
        }
    }
    assert_eq!(passed, 125_000 / 1020);
    assert!(w.core.stats().rate_limited_packets.get() > 0);
    // 100 ms later: 12 500 B more, continuously refilled (no 1 s window).
    w.advance(Duration::from_millis(100));
    let mut more = 0;
    for _ in 0..50 {
        if w.forward(c, &payload) == Verdict::Forward(s) {
            more += 1;
        }
    }
    // 560 B left over + 12 500 B refilled = 13 060 B: twelve 1020-byte datagrams.
    assert_eq!(more, (125_000 % 1020 + 12_500) / 1020);
}

#[test]
fn junk_is_never_answered_and_is_rate_limited_per_source() {
    let mut w = world_with(|c| c.ip_rate_pps = 100.0);
    let src = addr("192.0.2.200:7");
    for len in [0usize, 1, 19, 20, 64, 1500, 1501] {
        let buf = vec![0x57u8; len];
        assert_eq!(w.send(src, &buf), Verdict::Drop);
    }
    let mut fwd = [0u8; 64];
    let n = encode_forward(&mut fwd, SID, b"nobody home").unwrap();
    for _ in 0..300 {
        assert_eq!(w.send(src, &fwd[..n]), Verdict::Drop);
    }
    let st = w.core.stats();
    assert!(st.rate_limited_packets.get() >= 300 - 100);
    assert_eq!(st.rejects_sent.get(), 0);
}

#[test]
fn rejects_are_rate_limited_per_source_and_never_larger_than_the_request() {
    let mut w = world_with(|c| {
        c.reject_per_ip_per_s = 5.0;
        c.verify_per_ip_per_s = 1000.0;
    });
    let src = addr("192.0.2.77:7");
    let ts = w.ts();
    let mut replies = 0;
    for _ in 0..100 {
        let (v, _, n) = w.present_raw(src, false, SID, PeerRole::Client, "v4.public.xx", None, ts);
        if let Verdict::Reply(_, len) = v {
            assert_eq!(len, REJECT_LEN);
            assert!(len <= n);
            replies += 1;
        }
    }
    assert_eq!(replies, 5);
    assert_eq!(w.core.stats().rejects_suppressed.get(), 95);
    // A tiny malformed PRESENT (shorter than a reject) gets no answer at all.
    let buf = [
        0x57, 0x01, 0x01, 0, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11,
        0x11, 0x11, 0x11, 0x11, 0x11, 0,
    ];
    w.advance(Duration::from_secs(10));
    assert_eq!(w.send(src, &buf), Verdict::Drop);
}

#[test]
fn verification_budget_protects_the_cpu() {
    let mut w = world_with(|c| {
        c.verify_per_ip_per_s = 3.0;
        c.verify_global_per_s = 10.0;
        c.reject_per_ip_per_s = 1000.0;
    });
    let forger = LeaseSigner::new(&key(9), None).unwrap();
    let forged = w.issue_with(&forger, &w.lease(&w.client, LeaseRole::Client));
    let ts = w.ts();
    // One source: 3 verifications, then RATE_LIMITED without verifying.
    let src = addr("192.0.2.1:1");
    let mut reasons = Vec::new();
    for _ in 0..6 {
        if let (_, Some(Answer::Reject(r)), _) =
            w.present_raw(src, false, SID, PeerRole::Client, &forged, None, ts)
        {
            reasons.push(r);
        }
    }
    assert_eq!(&reasons[..3], &[RejectReason::InvalidSignature; 3]);
    assert_eq!(&reasons[3..], &[RejectReason::RateLimited; 3]);
    assert_eq!(w.core.stats().lease_verifications.get(), 3);
    // Many sources: the relay-wide budget caps the total.
    for i in 0..50u8 {
        let from = SocketAddr::from(([192, 0, 2, 100 + i], 1));
        w.present_raw(from, false, SID, PeerRole::Client, &forged, None, ts);
    }
    assert_eq!(w.core.stats().lease_verifications.get(), 10);
    // A valid peer still gets in once the budget refills.
    w.advance(Duration::from_secs(1));
    let ct = w.issue(&w.lease(&w.client, LeaseRole::Client));
    assert!(matches!(
        w.present(addr(C), Who::Client, &ct),
        Some(Answer::Ack(_))
    ));
}

#[test]
fn insecure_dev_accepts_unverified_tokens() {
    let mut core = RelayCore::new(
        CoreConfig::new(RELAY_ID),
        LeaseAuth::InsecureDev,
        Arc::new(Stats::default()),
        0,
    );
    let now = Now {
        mono_ns: 0,
        unix_ms: T0_MS,
    };
    let mut reply = [0u8; REPLY_MAX];
    let mut buf = [0u8; 64];
    let n = encode_present(&mut buf, false, SID, PeerRole::Server, "anything", None).unwrap();
    let v = core.on_datagram(now, addr(S), &buf[..n], &mut reply);
    let Verdict::Reply(_, len) = v else {
        panic!("{v:?}")
    };
    assert!(matches!(
        decode_answer(&reply[..len]).unwrap().1,
        Answer::Ack(_)
    ));
}

/// Applies binding events to a set, as the kernel filter's table does.
fn apply(core: &mut RelayCore, pairs: &mut std::collections::HashSet<([u8; 16], SocketAddr)>) {
    for ev in core.drain_bindings() {
        match ev {
            BindingEvent::Bound(sid, a) => {
                pairs.insert((sid, a));
            }
            BindingEvent::Unbound(sid, a) => {
                assert!(pairs.remove(&(sid, a)), "unbinding a pair never bound");
            }
        }
    }
}

#[test]
fn binding_events_follow_admission_rebinding_expiry_and_idle_removal() {
    let mut w = world_with(|c| c.idle_timeout = Duration::from_secs(600));
    assert_eq!(w.core.drain_bindings().count(), 0, "untracked: nothing");
    w.core.track_bindings();
    let mut pairs = std::collections::HashSet::new();
    let (c, s) = (addr(C), addr(S));
    let (ct, _) = w.admit_with_client_ttl(c, s, 120);
    apply(&mut w.core, &mut pairs);
    assert_eq!(pairs, [(SID, c), (SID, s)].into());
    // A lost ACK re-presented from the bound address changes nothing; junk changes nothing.
    w.advance(Duration::from_millis(10));
    assert!(matches!(
        w.present(c, Who::Client, &ct),
        Some(Answer::Ack(_))
    ));
    assert_eq!(w.forward(addr("192.0.2.7:1"), b"spoofed"), Verdict::Drop);
    assert_eq!(w.core.drain_bindings().count(), 0);
    // NAT rebinding moves the client's pair.
    w.advance(Duration::from_millis(500));
    let moved = addr("198.51.100.1:40777");
    assert!(matches!(
        w.present(moved, Who::Client, &ct),
        Some(Answer::Ack(_))
    ));
    apply(&mut w.core, &mut pairs);
    assert_eq!(pairs, [(SID, moved), (SID, s)].into());
    // The client's lease (120 s) expires: cleanup unbinds it, the server stays.
    w.advance(Duration::from_secs(121));
    w.core.cleanup(w.now);
    apply(&mut w.core, &mut pairs);
    assert_eq!(pairs, [(SID, s)].into());
    // The session goes idle: its remaining pair goes with it.
    w.advance(Duration::from_secs(600));
    w.core.cleanup(w.now);
    assert_eq!(w.core.session_count(), 0);
    apply(&mut w.core, &mut pairs);
    assert!(pairs.is_empty());
}

#[test]
fn both_roles_on_one_address_stay_bound_until_neither_is() {
    let mut w = world_with(|c| c.idle_timeout = Duration::from_secs(3600));
    w.core.track_bindings();
    let mut pairs = std::collections::HashSet::new();
    let one = addr(C);
    w.admit_with_client_ttl(one, one, 60);
    apply(&mut w.core, &mut pairs);
    assert_eq!(pairs, [(SID, one)].into());
    w.advance(Duration::from_secs(61));
    w.core.cleanup(w.now);
    apply(&mut w.core, &mut pairs);
    assert_eq!(
        pairs,
        [(SID, one)].into(),
        "the server still holds the address"
    );
}

#[test]
fn an_idle_session_with_both_roles_on_one_address_unbinds_it_once() {
    let mut w = world_with(|c| c.idle_timeout = Duration::from_secs(60));
    w.core.track_bindings();
    let mut pairs = std::collections::HashSet::new();
    let one = addr(C);
    w.admit_with_client_ttl(one, one, 900);
    apply(&mut w.core, &mut pairs);
    w.advance(Duration::from_secs(61));
    w.core.cleanup(w.now);
    assert_eq!(w.core.session_count(), 0);
    assert_eq!(
        w.core.drain_bindings().collect::<Vec<_>>(),
        [BindingEvent::Unbound(SID, one)]
    );
}
