//! Authenticated roaming over real loopback sockets, for both backends: the client's path to
//! the host goes through a small NAT (a thread with real UDP sockets) whose outward port
//! changes mid-stream. The host's session moves to the new port after a path check and the
//! stream resumes; a captured client datagram replayed from a third socket moves nothing.
//! Every wait is bounded by a deadline.

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use wavry_net::{ClientDriver, DriverConfig, HostDriver, IoMode};
use wavry_rift::crypto::PeerPolicy;
use wavry_rift::identity::IdentityKey;
use wavry_rift::session::{Endpoint, Event, FrameMeta, Role, SessionConfig, SessionHandle};

mod support;
use support::{recv, socket};

const WAIT: Duration = Duration::from_secs(10);

/// A NAT between the client and the host: the client talks to `front`; datagrams go on to
/// the host from `outer[active]`; answers to the other outer port are dropped (the old
/// mapping is gone).
struct Nat {
    front: SocketAddr,
    outer: [SocketAddr; 2],
    active: Arc<AtomicUsize>,
    capture: Arc<Mutex<Option<Vec<u8>>>>,
    want_capture: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Nat {
    fn start(host: SocketAddr) -> Self {
        let bind = || UdpSocket::bind("127.0.0.1:0").expect("bind");
        let front = bind();
        let outer = [bind(), bind()];
        front
            .set_read_timeout(Some(Duration::from_millis(1)))
            .expect("timeout");
        for o in &outer {
            o.set_nonblocking(true).expect("nonblocking");
        }
        let addrs = [
            outer[0].local_addr().expect("addr"),
            outer[1].local_addr().expect("addr"),
        ];
        let mut nat = Self {
            front: front.local_addr().expect("addr"),
            outer: addrs,
            active: Arc::new(AtomicUsize::new(0)),
            capture: Arc::new(Mutex::new(None)),
            want_capture: Arc::new(AtomicBool::new(false)),
            stop: Arc::new(AtomicBool::new(false)),
            thread: None,
        };
        let (active, capture, want, stop) = (
            nat.active.clone(),
            nat.capture.clone(),
            nat.want_capture.clone(),
            nat.stop.clone(),
        );
        let thread = std::thread::spawn(move || {
            let mut buf = vec![0u8; 65_536];
            let mut client: Option<SocketAddr> = None;
            while !stop.load(Ordering::Relaxed) {
                if let Ok((n, from)) = front.recv_from(&mut buf) {
                    client = Some(from);
                    if want.swap(false, Ordering::Relaxed) {
                        *capture.lock().expect("lock") = Some(buf[..n].to_vec());
                    }
                    let _ = outer[active.load(Ordering::Relaxed)].send_to(&buf[..n], host);
                }
                for (i, o) in outer.iter().enumerate() {
                    while let Ok((n, _)) = o.recv_from(&mut buf) {
                        if let (Some(c), true) = (client, i == active.load(Ordering::Relaxed)) {
                            let _ = front.send_to(&buf[..n], c);
                        }
                    }
                }
            }
        });
        nat.thread = Some(thread);
        nat
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

/// Sends frames every 16 ms until `count` frames with ids from `from_id` on arrived; `sent`
/// counts the frames sent (the session numbers them from 0).
fn stream_until(
    host: &HostDriver,
    client: &ClientDriver,
    session: SessionHandle,
    (sent, from_id): (&mut u64, u64),
    count: usize,
    deadline: Instant,
) {
    let mut got = 0;
    while got < count {
        assert!(
            Instant::now() < deadline,
            "only {got} of {count} frames arrived"
        );
        let mut data = host.take_buffer();
        data.extend_from_slice(&[7u8; 3_000]);
        host.send_frame(
            session,
            data,
            FrameMeta::default(),
            Duration::from_millis(16),
        )
        .expect("send frame");
        *sent += 1;
        let until = Instant::now() + Duration::from_millis(16);
        while let Ok(e) = client.events().recv_deadline(until) {
            match e {
                Event::Frame(f) => {
                    if f.frame_id >= from_id {
                        got += 1;
                    }
                    client.recycle(f).expect("recycle");
                }
                Event::Closed(r) => panic!("client closed: {r:?}"),
                _ => {}
            }
        }
    }
}

fn roaming(mode: IoMode) {
    let deadline = Instant::now() + WAIT;
    let host_key = Arc::new(IdentityKey::from_seed([0x11; 32]).expect("key"));
    let client_key = Arc::new(IdentityKey::from_seed([0x22; 32]).expect("key"));
    let mut host_cfg = SessionConfig::new(Role::Host, PeerPolicy::Pinned(client_key.id()));
    host_cfg.playout_slack = Duration::from_millis(500);
    let mut client_cfg = SessionConfig::new(Role::Client, PeerPolicy::Pinned(host_key.id()));
    client_cfg.playout_slack = Duration::from_millis(500);
    let host = HostDriver::spawn(
        socket(mode),
        Endpoint::new(host_cfg, host_key, 4),
        DriverConfig::default(),
    )
    .expect("host");
    let nat = Nat::start(host.local_addr());
    let client = ClientDriver::connect(
        socket(mode),
        client_cfg,
        client_key,
        nat.front,
        DriverConfig::default(),
    )
    .expect("client");
    let session = loop {
        match recv(host.events(), deadline, "host Connected") {
            (h, Event::Connected { .. }) => break h,
            (_, Event::Closed(r)) => panic!("host closed: {r:?}"),
            _ => {}
        }
    };
    let mut sent = 0;
    stream_until(&host, &client, session, (&mut sent, 0), 10, deadline);
    let snap = |what: &str| {
        host.snapshot(session, WAIT)
            .expect("snapshot")
            .unwrap_or_else(|| panic!("{what}: session gone"))
    };
    assert_eq!(snap("before").remote, nat.outer[0]);

    // A captured client datagram, replayed from a third socket: refused, nothing moves.
    nat.want_capture.store(true, Ordering::Relaxed);
    let captured = loop {
        if let Some(c) = nat.capture.lock().expect("lock").take() {
            break c;
        }
        assert!(Instant::now() < deadline, "nothing captured");
        let _ = client.events().recv_timeout(Duration::from_millis(5));
    };
    let before = snap("replay").stats;
    let third = UdpSocket::bind("127.0.0.1:0").expect("bind");
    third.send_to(&captured, host.local_addr()).expect("send");
    let s = loop {
        let s = snap("replay").stats;
        if s.replayed + s.rejected > before.replayed + before.rejected {
            break s;
        }
        assert!(Instant::now() < deadline, "the replay never arrived");
    };
    assert_eq!(s.path_checks_started, 0);
    assert_eq!(snap("after replay").remote, nat.outer[0]);

    // The NAT rebinds: the client's datagrams now come from the other port.
    nat.active.store(1, Ordering::Relaxed);
    let moved_at = sent;
    stream_until(&host, &client, session, (&mut sent, moved_at), 20, deadline);
    let s = snap("after the move");
    assert_eq!(s.remote, nat.outer[1]);
    assert_eq!(s.stats.migrations, 1);
    assert_eq!(s.stats.path_checks_failed, 0);
    drop(nat);
    client.shutdown().expect("client shutdown");
    host.shutdown().expect("host shutdown");
}

#[test]
fn roaming_over_uring() {
    roaming(IoMode::Uring);
}

#[test]
fn roaming_over_portable() {
    roaming(IoMode::Portable);
}
