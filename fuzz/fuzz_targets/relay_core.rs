//! The relay core driven by arbitrary datagrams from arbitrary addresses, mixed with genuine
//! signed presentations of real leases. Invariant: nothing is ever sent to an address that
//! has not presented a valid lease, except LEASE_REJECTs to the source that are no larger
//! than its request and within the per-source reject budget. And the binding events that keep
//! the kernel's bound-peers filter in step name only admitted addresses, never unbind what
//! was not bound, and cover every (session, source) pair the core forwards for: the kernel
//! never drops what the core would forward.
#![no_main]
use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use time::OffsetDateTime;
use uuid::Uuid;
use wavry_relay::core::stats::Stats;
use wavry_relay::peer::{Answer, decode_answer, encode_forward, encode_present};
use wavry_relay::{BindingEvent, CoreConfig, LeaseAuth, Now, REPLY_MAX, RelayCore, Verdict};
use wavry_rift::identity::IdentityKey;
use wavry_rift::lease::{LeaseClaims, LeaseRole, LeaseSigner, LeaseVerifier};
use wavry_rift::wire::PeerRole;

const RELAY_ID: &str = "fuzz-relay";
const T0_MS: i64 = 1_800_000_000_000;
const REJECTS_PER_S: f64 = 5.0;

struct Fixture {
    verifier: LeaseVerifier,
    /// (session id, role, holder key, token)
    leases: Vec<([u8; 16], PeerRole, IdentityKey, String)>,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let master = LeaseSigner::new(&IdentityKey::from_seed([1; 32]).unwrap(), None).unwrap();
        let now = OffsetDateTime::from_unix_timestamp(T0_MS / 1000).unwrap();
        let mut leases = Vec::new();
        for (i, sid) in [[0xA1u8; 16], [0xB2u8; 16]].into_iter().enumerate() {
            for (j, role) in [PeerRole::Client, PeerRole::Server].into_iter().enumerate() {
                let key = IdentityKey::from_seed([10 + (i * 2 + j) as u8; 32]).unwrap();
                let token = master
                    .issue(&LeaseClaims {
                        sub: key.id().to_string(),
                        wavry_id: Some(key.id().to_string()),
                        sid: Uuid::from_bytes(sid),
                        role: LeaseRole::from(role),
                        rid: RELAY_ID.into(),
                        kid: Some(master.key_id().to_owned()),
                        jti: None,
                        iat: now,
                        nbf: now,
                        exp: now + time::Duration::seconds(600),
                        slimit: None,
                        hlimit: None,
                    })
                    .unwrap();
                leases.push((sid, role, key, token));
            }
        }
        Fixture {
            verifier: LeaseVerifier::new(
                *master.public_key(),
                Some(master.key_id().to_owned()),
                RELAY_ID,
            ),
            leases,
        }
    })
}

fn address(b: &[u8]) -> SocketAddr {
    // A few well-known addresses (so sessions meet) and arbitrary ones.
    match b.first().copied().unwrap_or(0) % 12 {
        k @ 0..=7 => SocketAddr::from(([10, 0, 0, k], 4000 + u16::from(k))),
        _ => {
            let ip = [
                b.get(1).copied().unwrap_or(0),
                b.get(2).copied().unwrap_or(0),
                1,
                1,
            ];
            SocketAddr::from((ip, u16::from(b.get(3).copied().unwrap_or(0))))
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let f = fixture();
    let mut cfg = CoreConfig::new(RELAY_ID);
    cfg.max_sessions = 4;
    cfg.reject_per_ip_per_s = REJECTS_PER_S;
    cfg.verify_per_ip_per_s = 50.0;
    let mut core = RelayCore::new(
        cfg,
        LeaseAuth::Verify(f.verifier.clone()),
        Arc::new(Stats::default()),
        0,
    );
    core.track_bindings();
    // The kernel filter's table, built from the binding events.
    let mut bound: HashSet<([u8; 16], SocketAddr)> = HashSet::new();
    let mut now = Now {
        mono_ns: 0,
        unix_ms: T0_MS,
    };
    let mut reply = [0u8; REPLY_MAX];
    // Addresses that were sent a LEASE_ACK after a genuine presentation.
    let mut admitted: HashSet<SocketAddr> = HashSet::new();
    // Rejects sent per source IP, and the time of the first one.
    let mut rejects: HashMap<IpAddr, u64> = HashMap::new();
    let mut buf = vec![0u8; 2048];
    let mut rest = data;
    while let [op, a, b, c, d, tail @ ..] = rest {
        rest = tail;
        let src = address(&[*a, *b, *c, *d]);
        let mut forward_sid = None;
        let (len, genuine) = match op % 6 {
            0 => {
                let dt = u64::from(u16::from_be_bytes([*b, *c]));
                now.mono_ns += dt * 1_000_000;
                now.unix_ms += i64::try_from(dt).unwrap();
                continue;
            }
            1 | 2 => {
                // A presentation of a real lease: signed by its holder (op 1) or by nobody.
                let (sid, role, key, token) = &f.leases[usize::from(*b) % f.leases.len()];
                let ts = u64::try_from(now.unix_ms).unwrap() + u64::from(*c);
                let holder = (op % 6 == 1).then_some((key, RELAY_ID, ts));
                let n = encode_present(&mut buf, *d & 1 == 1, *sid, *role, token, holder).unwrap();
                (n, op % 6 == 1)
            }
            3 => {
                let (sid, ..) = &f.leases[usize::from(*b) % f.leases.len()];
                let take = usize::from(*c).min(tail.len());
                let n = encode_forward(&mut buf, *sid, &tail[..take]).unwrap();
                rest = &tail[take..];
                forward_sid = Some(*sid);
                (n, false)
            }
            4 => {
                core.cleanup(now);
                apply(&mut core, &mut bound, &admitted);
                continue;
            }
            _ => {
                let take = (usize::from(*c) * 8).min(tail.len());
                buf[..take].copy_from_slice(&tail[..take]);
                rest = &tail[take..];
                (take, false)
            }
        };
        let verdict = core.on_datagram(now, src, &buf[..len], &mut reply);
        let was_admitted = admitted.contains(&src);
        if let Verdict::Reply(dst, n) = verdict
            && matches!(decode_answer(&reply[..n]), Ok((_, Answer::Ack(_))))
        {
            admitted.insert(dst);
        }
        apply(&mut core, &mut bound, &admitted);
        match verdict {
            Verdict::Drop => {}
            Verdict::Forward(dst) => {
                assert!(admitted.contains(&dst), "forwarded to unadmitted {dst}");
                assert!(admitted.contains(&src), "forwarded for unadmitted {src}");
                let sid = forward_sid.expect("only FORWARDs are forwarded");
                assert!(bound.contains(&(sid, src)), "the kernel would drop {src}'s FORWARD");
                assert!(bound.contains(&(sid, dst)), "forwarded to an unbound {dst}");
            }
            Verdict::Reply(dst, n) => {
                assert_eq!(dst, src, "replies go only to the source");
                assert!(n <= len, "reply larger than the request");
                match decode_answer(&reply[..n])
                    .expect("the core writes valid answers")
                    .1
                {
                    Answer::Ack(_) => {
                        assert!(
                            genuine || was_admitted,
                            "ACK for a presentation that was not genuine, to {src}"
                        );
                    }
                    Answer::Reject(_) => {
                        let count = rejects.entry(src.ip()).or_insert(0);
                        *count += 1;
                        let secs = now.mono_ns as f64 * 1e-9;
                        assert!(
                            (*count as f64) <= REJECTS_PER_S + 1.0 + secs * REJECTS_PER_S,
                            "too many rejects to {src}"
                        );
                    }
                }
            }
        }
    }
});

/// Applies the core's binding events to `bound` and checks them.
fn apply(
    core: &mut RelayCore,
    bound: &mut HashSet<([u8; 16], SocketAddr)>,
    admitted: &HashSet<SocketAddr>,
) {
    for ev in core.drain_bindings() {
        match ev {
            BindingEvent::Bound(sid, a) => {
                assert!(admitted.contains(&a), "bound an unadmitted {a}");
                bound.insert((sid, a));
            }
            BindingEvent::Unbound(sid, a) => {
                assert!(bound.remove(&(sid, a)), "unbound {a}, never bound");
            }
        }
    }
}
