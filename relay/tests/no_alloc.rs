//! After warm-up, the core forwards 100 000 datagrams with zero heap allocations (a counting
//! global allocator, counted per thread so the harness's own threads do not interfere).
#![allow(clippy::unwrap_used)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::net::SocketAddr;
use std::sync::Arc;

use time::OffsetDateTime;
use uuid::Uuid;
use wavry_relay::core::stats::Stats;
use wavry_relay::peer::{encode_forward, encode_present};
use wavry_relay::{CoreConfig, LeaseAuth, Now, REPLY_MAX, RelayCore, Verdict};
use wavry_rift::identity::IdentityKey;
use wavry_rift::lease::{LeaseClaims, LeaseRole, LeaseSigner, LeaseVerifier};
use wavry_rift::wire::PeerRole;

struct Counting;

thread_local! {
    static ALLOCS: Cell<usize> = const { Cell::new(0) };
}

#[allow(unsafe_code)]
// SAFETY: every method forwards to `System` with the caller's arguments unchanged; the only
// extra work is bumping a const-initialised thread-local counter, which never allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.with(|c| c.set(c.get() + 1));
        // SAFETY: forwarded contract of `GlobalAlloc::alloc`.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded contract of `GlobalAlloc::dealloc`.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        ALLOCS.with(|c| c.set(c.get() + 1));
        // SAFETY: forwarded contract of `GlobalAlloc::alloc_zeroed`.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCS.with(|c| c.set(c.get() + 1));
        // SAFETY: forwarded contract of `GlobalAlloc::realloc`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocs() -> usize {
    ALLOCS.with(Cell::get)
}

const RELAY_ID: &str = "relay-noalloc";
const T0_MS: i64 = 1_800_000_000_000;

#[test]
fn forwarding_makes_no_allocation() {
    let master = LeaseSigner::new(&IdentityKey::from_seed([1; 32]).unwrap(), None).unwrap();
    let verifier = LeaseVerifier::new(*master.public_key(), None, RELAY_ID);
    let mut cfg = CoreConfig::new(RELAY_ID);
    cfg.max_bitrate_kbps = u32::MAX;
    let mut core = RelayCore::new(
        cfg,
        LeaseAuth::Verify(verifier),
        Arc::new(Stats::default()),
        0,
    );
    let sid = [0x5A; 16];
    let wall = OffsetDateTime::from_unix_timestamp(T0_MS / 1000).unwrap();
    let mut now = Now {
        mono_ns: 0,
        unix_ms: T0_MS,
    };
    let peers: [(SocketAddr, PeerRole, IdentityKey); 2] = [
        (
            "127.0.0.1:5001".parse().unwrap(),
            PeerRole::Client,
            IdentityKey::from_seed([2; 32]).unwrap(),
        ),
        (
            "127.0.0.1:5002".parse().unwrap(),
            PeerRole::Server,
            IdentityKey::from_seed([3; 32]).unwrap(),
        ),
    ];
    let mut reply = [0u8; REPLY_MAX];
    for (addr, role, key) in &peers {
        let token = master
            .issue(&LeaseClaims {
                sub: key.id().to_string(),
                wavry_id: Some(key.id().to_string()),
                sid: Uuid::from_bytes(sid),
                role: LeaseRole::from(*role),
                rid: RELAY_ID.into(),
                kid: None,
                jti: None,
                iat: wall,
                nbf: wall,
                exp: wall + time::Duration::seconds(900),
                slimit: Some(u32::MAX),
                hlimit: Some(u32::MAX),
            })
            .unwrap();
        let mut buf = vec![0u8; 1024];
        let n = encode_present(
            &mut buf,
            false,
            sid,
            *role,
            &token,
            Some((key, RELAY_ID, T0_MS as u64)),
        )
        .unwrap();
        assert!(matches!(
            core.on_datagram(now, *addr, &buf[..n], &mut reply),
            Verdict::Reply(..)
        ));
    }
    let mut dgram = [0u8; 1220];
    let n = encode_forward(&mut dgram, sid, &[7u8; 1200]).unwrap();
    let mut forward = |now: &mut Now, i: usize| {
        now.mono_ns += 1_000;
        let (from, to) = if i % 2 == 0 {
            (peers[0].0, peers[1].0)
        } else {
            (peers[1].0, peers[0].0)
        };
        assert_eq!(
            core.on_datagram(*now, from, &dgram[..n], &mut reply),
            Verdict::Forward(to)
        );
    };
    for i in 0..1_000 {
        forward(&mut now, i);
    }
    let before = allocs();
    for i in 0..100_000 {
        forward(&mut now, i);
    }
    assert_eq!(
        allocs() - before,
        0,
        "allocations while forwarding 100 000 datagrams"
    );
}
