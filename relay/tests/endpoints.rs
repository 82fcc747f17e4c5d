//! End to end with real processes and the real endpoints on loopback: `wavry-master` +
//! `wavry-relay` + a host `Endpoint` on a `wavry-net` `HostDriver` serving one direct client
//! and one relayed client at once (both encrypted, frames byte-exact). The relayed client and
//! the host each present their own lease from the master (faults 3 and 4) and every
//! handshake and transport datagram crosses the relay inside FORWARD (fault 2). Between the
//! relayed client and the relay sits a small NAT played by the test: it drops FORWARDs
//! towards the client (NACK retransmissions must cross the relay, fault 1) and, mid-stream,
//! changes its outside port (the client re-presents, signed, and frames resume).
//!
//! The host adds its relay paths to the running `HostDriver` and sees the relay's verdicts
//! (admitted; a forged token rejected) on the driver's relay-event channel.
//!
//! Every wait is bounded by a deadline; nothing asserts a wall-clock duration.
#![allow(clippy::unwrap_used)]

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use wavry_control_testkit::TempDir;
use wavry_net::{ClientDriver, Config, DriverConfig, HostDriver, IoMode, NetSocket};
use wavry_rift::cc::DeltaConfig;
use wavry_rift::crypto::PeerPolicy;
use wavry_rift::identity::IdentityKey;
use wavry_rift::relay_client::{RelayClientConfig, RelayEvent, RelayLease};
use wavry_rift::session::{Endpoint, Event, FrameMeta, Role, Session, SessionConfig};
use wavry_rift::wire::PeerRole;

mod common;

use common::*;

/// Bound on any one wait.
const WAIT: Duration = Duration::from_secs(20);

fn socket() -> NetSocket {
    wavry_net::bind(
        "127.0.0.1:0".parse().unwrap(),
        IoMode::Auto,
        &Config::default(),
    )
    .unwrap()
}

/// Frame `i`: about eleven datagrams, bytes derived from `i`, the index in the first 4 bytes.
fn frame(i: u32) -> Vec<u8> {
    let mut f: Vec<u8> = (0..12_000 + i as usize)
        .map(|j| (j * 31 + i as usize * 7) as u8)
        .collect();
    f[..4].copy_from_slice(&i.to_be_bytes());
    f
}

/// Frame metadata stamped with the real send time: the client plays frames out against their
/// timestamps, so frames sent lock-step (each after the last arrived) must not carry a
/// nominal 60 fps clock that falls ever further behind (they would all be late and dropped).
fn meta(_i: u32) -> FrameMeta {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    FrameMeta {
        timestamp_us: START.get_or_init(Instant::now).elapsed().as_micros() as u64,
        keyframe: true,
        capture_us: 0,
        encode_us: 0,
    }
}

/// The relayed client's NAT: inside address (what the client takes for the relay), one
/// outside socket towards the relay, replaced on `rebind`. Drops `drop_run` consecutive
/// FORWARDs towards the client out of every `drop_period` while `drop_period > 0`.
struct Nat {
    inside: SocketAddr,
    rebind: Arc<AtomicBool>,
    /// One message per port change, sent once the old port is gone.
    rebound: std::sync::mpsc::Receiver<()>,
    drop_period: Arc<AtomicU64>,
    dropped: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Nat {
    fn spawn(relay: SocketAddr, drop_run: u64) -> Self {
        let inside = UdpSocket::bind("127.0.0.1:0").unwrap();
        inside
            .set_read_timeout(Some(Duration::from_millis(1)))
            .unwrap();
        let addr = inside.local_addr().unwrap();
        let rebind = Arc::new(AtomicBool::new(false));
        let drop_period = Arc::new(AtomicU64::new(0));
        let dropped = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (rebound_tx, rebound) = std::sync::mpsc::channel();
        let (rb, dp, dr, st) = (
            rebind.clone(),
            drop_period.clone(),
            dropped.clone(),
            stop.clone(),
        );
        let thread = std::thread::spawn(move || {
            let outside = || {
                let s = UdpSocket::bind("127.0.0.1:0").unwrap();
                s.set_nonblocking(true).unwrap();
                s
            };
            let mut out = outside();
            let mut client = None;
            let mut n = 0u64;
            let mut buf = [0u8; 2048];
            while !st.load(Ordering::Relaxed) {
                if rb.swap(false, Ordering::Relaxed) {
                    // The old port is gone: the relay's datagrams to it are lost.
                    out = outside();
                    let _ = rebound_tx.send(());
                }
                if let Ok((len, from)) = inside.recv_from(&mut buf) {
                    client = Some(from);
                    let _ = out.send_to(&buf[..len], relay);
                }
                while let Ok((len, from)) = out.recv_from(&mut buf) {
                    if from != relay {
                        continue;
                    }
                    let period = dp.load(Ordering::Relaxed);
                    if period > 0 && buf[2] == 0x10 {
                        n += 1;
                        if n % period < drop_run {
                            dr.fetch_add(1, Ordering::Relaxed);
                            continue;
                        }
                    }
                    if let Some(c) = client {
                        let _ = inside.send_to(&buf[..len], c);
                    }
                }
            }
        });
        Self {
            inside: addr,
            rebind,
            rebound,
            drop_period,
            dropped,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Nat {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn host_cfg(allowed: Vec<wavry_rift::identity::WavryId>) -> SessionConfig {
    let mut cfg = SessionConfig::new(Role::Host, PeerPolicy::AllowList(allowed));
    // Below the relay's --max-bitrate-kbps (50 Mbit/s in the helpers).
    let rate = 20_000_000;
    cfg.cc = DeltaConfig {
        min_bps: rate,
        max_bps: rate,
        initial_bps: rate,
        ..DeltaConfig::default()
    };
    cfg.playout_slack = Duration::from_millis(500);
    cfg
}

fn client_cfg(host: wavry_rift::identity::WavryId) -> SessionConfig {
    let mut cfg = SessionConfig::new(Role::Client, PeerPolicy::Pinned(host));
    cfg.playout_slack = Duration::from_millis(500);
    cfg
}

/// Waits until `client` delivers the frame with index `i`, byte-exact; frames of other
/// indexes (late ones) are checked too. False when `until` passes first.
fn await_frame(client: &ClientDriver, i: u32, until: Instant) -> bool {
    loop {
        match client.events().recv_deadline(until) {
            Ok(Event::Frame(f)) => {
                let got = u32::from_be_bytes(f.data[..4].try_into().unwrap());
                assert_eq!(f.data, frame(got), "frame {got} byte-exact");
                if got == i {
                    return true;
                }
            }
            Ok(Event::Closed(r)) => panic!("client closed: {r:?}"),
            Ok(_) => {}
            Err(_) => return false,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_endpoint_serves_direct_and_relayed_clients_through_the_real_relay() {
    let dir = TempDir::new("relay-endpoints").unwrap();
    let master = spawn_master(dir.path()).await;
    let relay = spawn_relay(&master, dir.path(), free_udp_port(), &["--threads", "2"]).await;
    let (host_peer, relayed_peer) = (Peer::new(0x31), Peer::new(0x32));
    let host_key = Arc::new(IdentityKey::from_seed([0x31; 32]).unwrap());
    let relayed_key = Arc::new(IdentityKey::from_seed([0x32; 32]).unwrap());
    let direct_key = Arc::new(IdentityKey::from_seed([0x33; 32]).unwrap());

    // The requester is the client, the target (the host) the server.
    let g = master.lease(&relayed_peer, &host_peer, "none").await;
    let (sid, _) = sid_of(&g);
    let lease = |addr, role, token: &str| RelayLease {
        relay_addr: addr,
        relay_id: relay.id.clone(),
        session_id: sid,
        role,
        token: token.to_owned(),
    };
    let ct = g["requester"]["token"].as_str().unwrap();
    let st = g["target"]["token"].as_str().unwrap();

    let endpoint = Endpoint::new(
        host_cfg(vec![relayed_key.id(), direct_key.id()]),
        host_key.clone(),
        4,
    );
    let host = HostDriver::spawn(socket(), endpoint, DriverConfig::default()).unwrap();
    // Relay paths are added to the running driver; their events come out of it. A path whose
    // token no master signed is rejected by the relay; the real one is admitted.
    let forged_sid = [0x77; 16];
    host.add_relay_path(
        RelayLease {
            session_id: forged_sid,
            ..lease(relay.udp, PeerRole::Server, "v4.public.forged")
        },
        RelayClientConfig::default(),
        WAIT,
    )
    .unwrap();
    host.add_relay_path(
        lease(relay.udp, PeerRole::Server, st),
        RelayClientConfig::default(),
        WAIT,
    )
    .unwrap();
    let deadline = Instant::now() + WAIT;
    let (mut admitted, mut rejected) = (false, false);
    while !(admitted && rejected) {
        match host
            .relay_events()
            .recv_deadline(deadline)
            .expect("relay events")
        {
            (id, RelayEvent::Admitted(_)) if id == sid => admitted = true,
            (id, RelayEvent::Rejected(_)) if id == forged_sid => rejected = true,
            other => panic!("unexpected relay event {other:?}"),
        }
    }
    assert_eq!(
        host.relay_path_state(relay.udp, sid, WAIT).unwrap(),
        Some((true, false))
    );
    assert_eq!(
        host.relay_path_state(relay.udp, forged_sid, WAIT).unwrap(),
        Some((false, true))
    );
    assert!(host.remove_relay_path(relay.udp, forged_sid, WAIT).unwrap());

    // Drops 3 FORWARDs out of every 40 towards the relayed client once enabled.
    let nat = Nat::spawn(relay.udp, 3);
    let session = Session::client_via_relay(
        Instant::now(),
        unix_ms(),
        client_cfg(host_key.id()),
        relayed_key.clone(),
        lease(nat.inside, PeerRole::Client, ct),
        RelayClientConfig::default(),
    )
    .unwrap();
    let relayed = ClientDriver::spawn(socket(), session, DriverConfig::default()).unwrap();
    let direct = ClientDriver::connect(
        socket(),
        client_cfg(host_key.id()),
        direct_key.clone(),
        host.local_addr(),
        DriverConfig::default(),
    )
    .unwrap();

    // Both sessions come up on the one endpoint, each with its authenticated identity.
    let deadline = Instant::now() + WAIT;
    let (mut h_relayed, mut h_direct) = (None, None);
    while h_relayed.is_none() || h_direct.is_none() {
        match host
            .events()
            .recv_deadline(deadline)
            .expect("host Connected")
        {
            (h, Event::Connected { peer, .. }) if peer == relayed_key.id() => h_relayed = Some(h),
            (h, Event::Connected { peer, .. }) if peer == direct_key.id() => h_direct = Some(h),
            (_, Event::Closed(r)) => panic!("host session closed: {r:?}"),
            _ => {}
        }
    }
    let (h_relayed, h_direct) = (h_relayed.unwrap(), h_direct.unwrap());
    for c in [&relayed, &direct] {
        loop {
            match c
                .events()
                .recv_deadline(deadline)
                .expect("client Connected")
            {
                Event::Connected { peer, .. } => {
                    assert_eq!(peer, host_key.id());
                    break;
                }
                Event::Closed(r) => panic!("client closed: {r:?}"),
                _ => {}
            }
        }
    }
    let snap = host
        .snapshot(h_relayed, WAIT)
        .unwrap()
        .expect("relayed session");
    assert_eq!(
        snap.remote, relay.udp,
        "the relayed session talks to the relay"
    );
    let snap = host
        .snapshot(h_direct, WAIT)
        .unwrap()
        .expect("direct session");
    assert_ne!(snap.remote, relay.udp);

    // Both at once, frames byte-exact; the relayed leg loses FORWARDs and recovers them by
    // NACK retransmissions through the relay.
    nat.drop_period.store(40, Ordering::Relaxed);
    let interval = Duration::from_millis(16);
    for i in 0..60 {
        host.send_frame(h_direct, frame(i), meta(i), interval)
            .unwrap();
        host.send_frame(h_relayed, frame(i), meta(i), interval)
            .unwrap();
        let until = Instant::now() + WAIT;
        assert!(await_frame(&direct, i, until), "direct frame {i}");
        assert!(await_frame(&relayed, i, until), "relayed frame {i}");
    }
    nat.drop_period.store(0, Ordering::Relaxed);
    assert!(nat.dropped.load(Ordering::Relaxed) > 0, "loss was injected");
    let host_relayed = host.snapshot(h_relayed, WAIT).unwrap().unwrap();
    assert!(
        host_relayed.stats.retransmitted > 0,
        "NACK-driven retransmissions crossed the relay: {:?}",
        host_relayed.stats
    );
    let client_stats = relayed.snapshot(WAIT).unwrap().stats;
    assert!(client_stats.nacks_sent > 0, "{client_stats:?}");

    // The client's outside port changes mid-stream: the relay drops its datagrams from the
    // unbound port and its answers go to the old one; the silent path makes the client
    // re-present, signed, from the new port, and frames resume.
    // Frames are sent only once the old port is gone: a frame that slipped through it before
    // the change would look like a recovery that never happened.
    nat.rebind.store(true, Ordering::Relaxed);
    nat.rebound
        .recv_timeout(WAIT)
        .expect("the NAT changed its port");
    let deadline = Instant::now() + WAIT;
    let mut i = 1000;
    loop {
        host.send_frame(h_relayed, frame(i), meta(i), interval)
            .unwrap();
        if await_frame(&relayed, i, Instant::now() + Duration::from_millis(300)) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "frames never resumed after the port change"
        );
        i += 1;
    }
    for j in i + 1..i + 11 {
        host.send_frame(h_relayed, frame(j), meta(j), interval)
            .unwrap();
        assert!(
            await_frame(&relayed, j, Instant::now() + WAIT),
            "frame {j} after recovery"
        );
    }
    let represents = relayed
        .call(WAIT, |s, _| s.relay_stats().unwrap().represents)
        .unwrap();
    assert!(represents >= 1, "the client re-presented");
    let text = metrics(&relay).await;
    assert_eq!(metric(&text, "wavry_relay_nat_rebind_events_total"), 1);
    assert!(metric(&text, "wavry_relay_packets_forwarded_total") > 600);

    drop(relayed.shutdown());
    drop(direct.shutdown());
    drop(host.shutdown());
}
