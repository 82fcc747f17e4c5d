//! The full encrypted, mutually authenticated RIFT session over real loopback sockets, run by a
//! [`HostDriver`] and a [`ClientDriver`], for every backend. An explicit backend that cannot
//! start fails: nothing is skipped. Every wait is a channel receive with a deadline.

use std::sync::Arc;
use std::time::{Duration, Instant};

use wavry_net::{ClientDriver, DriverConfig, HostDriver, IoMode};
use wavry_rift::cc::DeltaConfig;
use wavry_rift::crypto::PeerPolicy;
use wavry_rift::identity::IdentityKey;
use wavry_rift::proto::{InputMessage, Key, input_message};
use wavry_rift::session::{
    CloseReason, Endpoint, Event, FrameMeta, Role, SessionConfig, SessionHandle,
};
use wavry_rift::transfer::{Resume, sha256};

/// Bound on any single wait; the whole test takes well under a second when healthy.
mod support;
use support::{recv, socket};

const WAIT: Duration = Duration::from_secs(10);
const FRAMES: usize = 120;

/// Frame `i`: sizes from 1 byte to several hundred datagrams, bytes derived from `i`.
fn frame(i: usize) -> Vec<u8> {
    const SIZES: [usize; 8] = [1, 700, 1_070, 1_071, 4_000, 33_333, 100_000, 250_000];
    let len = SIZES[i % SIZES.len()] + i;
    (0..len)
        .map(|j| (j * 31 + i * 7 + (j >> 8)) as u8)
        .collect()
}

struct Pair {
    host: HostDriver,
    client: ClientDriver,
    host_key: Arc<IdentityKey>,
    client_key: Arc<IdentityKey>,
}

fn pair(mode: IoMode) -> Pair {
    let host_key = Arc::new(IdentityKey::from_seed([0x11; 32]).expect("key"));
    let client_key = Arc::new(IdentityKey::from_seed([0x22; 32]).expect("key"));
    let mut host_cfg = SessionConfig::new(Role::Host, PeerPolicy::Pinned(client_key.id()));
    // Loopback: a fixed high rate so that a 250 kB frame leaves well inside its deadline.
    let rate = 400_000_000;
    host_cfg.cc = DeltaConfig {
        min_bps: rate,
        max_bps: rate,
        initial_bps: rate,
        ..DeltaConfig::default()
    };
    // Files may take half of that here, so a few megabytes cross in well under a second.
    host_cfg.files.share_percent = 50;
    host_cfg.files.max_kbps = 200_000;
    // This test checks the data path, not scheduling: on a loaded 2-core CI machine a driver
    // thread can sleep past the default 15 ms playout slack, so give frames a generous one on
    // both sides. The host's slack bounds how long its chunks may wait to leave (a host thread
    // descheduled for 30 ms mid-frame once expired the frame's tail), the client's how long
    // it waits for them.
    let slack = Duration::from_millis(500);
    host_cfg.playout_slack = slack;
    let mut client_cfg = SessionConfig::new(Role::Client, PeerPolicy::Pinned(host_key.id()));
    client_cfg.playout_slack = slack;
    let endpoint = Endpoint::new(host_cfg, host_key.clone(), 4);
    let host = HostDriver::spawn(socket(mode), endpoint, DriverConfig::default()).expect("host");
    let client = ClientDriver::connect(
        socket(mode),
        client_cfg,
        client_key.clone(),
        host.local_addr(),
        DriverConfig::default(),
    )
    .expect("client");
    assert_eq!(host.backend(), client.backend());
    Pair {
        host,
        client,
        host_key,
        client_key,
    }
}

/// Waits for `Connected` on both sides and checks the authenticated identities.
fn connect(p: &Pair, deadline: Instant) -> SessionHandle {
    let session = loop {
        match recv(p.host.events(), deadline, "host Connected") {
            (h, Event::Connected { peer, .. }) => {
                assert_eq!(peer, p.client_key.id(), "host sees the client's identity");
                break h;
            }
            (_, Event::Closed(r)) => panic!("host session closed while connecting: {r:?}"),
            _ => {}
        }
    };
    loop {
        match recv(p.client.events(), deadline, "client Connected") {
            Event::Connected { peer, .. } => {
                assert_eq!(peer, p.host_key.id(), "client sees the host's identity");
                break;
            }
            Event::Closed(r) => panic!("client session closed while connecting: {r:?}"),
            _ => {}
        }
    }
    session
}

fn full_session(mode: IoMode) {
    let deadline = Instant::now() + WAIT;
    let p = pair(mode);
    let session = connect(&p, deadline);

    // Host -> client: each frame is sent once the previous one arrived, so every frame has
    // the path to itself and none can miss its deadline on a healthy loopback.
    // Timestamps are capture times in µs: the receiver's deadline (jitter) buffer uses them.
    let interval = Duration::from_millis(16);
    let epoch = Instant::now();
    let mut last_id = None;
    for i in 0..FRAMES {
        let mut data = p.host.take_buffer();
        data.extend_from_slice(&frame(i));
        let meta = FrameMeta {
            timestamp_us: epoch.elapsed().as_micros() as u64,
            keyframe: i == 0,
            ..FrameMeta::default()
        };
        p.host
            .send_frame(session, data, meta, interval)
            .expect("send frame");
        let got = loop {
            match recv(p.client.events(), deadline, "a frame") {
                Event::Frame(f) => break f,
                Event::FrameDropped { frame_id } => panic!(
                    "frame {frame_id} dropped: client {:?} host {:?}",
                    p.client.snapshot(WAIT).map(|s| (s.stats, s.driver)),
                    p.host.snapshot(session, WAIT).map(|s| s.map(|s| (
                        s.stats,
                        s.driver,
                        s.rtt,
                        s.target_bps
                    )))
                ),
                Event::Closed(r) => panic!("client closed while streaming: {r:?}"),
                _ => {}
            }
        };
        assert!(last_id < Some(got.frame_id), "frames arrive in order");
        last_id = Some(got.frame_id);
        assert_eq!(got.meta.keyframe, i == 0);
        assert!(got.data == frame(i), "frame {i} bytes differ");
        p.client.recycle(got).expect("recycle");
    }

    // Client -> host: a key press, reliable, arrives once.
    let press = InputMessage {
        timestamp_us: 42,
        event: Some(input_message::Event::Key(Key {
            keycode: 30,
            pressed: true,
        })),
    };
    p.client.send_input(press.clone()).expect("send input");
    loop {
        match recv(p.host.events(), deadline, "the key press") {
            (h, Event::Input(i)) => {
                assert_eq!(h, session);
                assert_eq!(i, press);
                break;
            }
            (_, Event::Closed(r)) => panic!("host closed while waiting for input: {r:?}"),
            _ => {}
        }
    }

    let snap = p
        .client
        .snapshot(WAIT)
        .expect("client snapshot while connected");
    assert!(snap.connected);
    assert_eq!(snap.peer, Some(p.host_key.id()));
    assert_eq!(snap.stats.frames_delivered, FRAMES as u64);
    assert!(snap.driver.datagrams_received > 0);

    // Clean shutdown: the client says goodbye, the host sees it, both threads join.
    let Pair { host, client, .. } = p;
    let client_stats = client.shutdown().expect("client thread ends cleanly");
    assert!(client_stats.datagrams_received >= FRAMES as u64);
    loop {
        match recv(host.events(), deadline, "the client's goodbye") {
            (h, Event::Closed(CloseReason::Remote(_))) => {
                assert_eq!(h, session);
                break;
            }
            (_, Event::Closed(r)) => panic!("unexpected close: {r:?}"),
            _ => {}
        }
    }
    let host_stats = host.shutdown().expect("host thread ends cleanly");
    assert!(host_stats.datagrams_sent >= FRAMES as u64);
    assert_eq!(host_stats.send_errors, 0);
    assert_eq!(host_stats.truncated, 0);
    assert!(Instant::now() < deadline, "bounded in time");
}

/// A 3 MB file crosses the encrypted session in-band beside nothing else: `send_file` /
/// `write_file` on the host's driver thread → `Event::FileData` at the client, SHA-256 checked
/// by the session, bytes compared. (The disk side, part files and resume, is the runtimes':
/// `wavry_runtime::files`.)
fn file_transfer(mode: IoMode) {
    let deadline = Instant::now() + WAIT;
    let p = pair(mode);
    let session = connect(&p, deadline);
    let data: Vec<u8> = (0..3_000_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8)
        .collect();
    let (size, sha) = (data.len() as u64, sha256(&data));
    let id = p
        .host
        .call(session, WAIT, move |s, now| {
            s.send_file(now, "clip.mkv", size, sha)
        })
        .expect("driver answers")
        .expect("offer sent");

    let mut received: Option<Vec<u8>> = None;
    let mut done = None;
    let mut sent_done = None;
    let mut pos = 0usize;
    while done.is_none() || sent_done.is_none() {
        crossbeam_channel::select! {
            recv(p.client.events()) -> e => match e.expect("client events") {
                Event::FileOffered(o) => {
                    assert_eq!((o.file_id, o.name.as_str(), o.size), (id, "clip.mkv", size));
                    received = Some(Vec::new());
                    p.client
                        .call(WAIT, move |s, now| s.accept_file(now, id, Resume::Start))
                        .expect("driver answers")
                        .expect("accepted");
                }
                Event::FileData { file_id, offset, data } => {
                    assert_eq!(file_id, id);
                    let sink = received.as_mut().expect("offered first");
                    assert_eq!(offset, sink.len() as u64, "in order");
                    sink.extend_from_slice(&data);
                }
                Event::FileDone { file_id, result, .. } => {
                    assert_eq!((file_id, result), (id, Ok(())));
                    done = Some(());
                }
                Event::Closed(r) => panic!("client closed during the transfer: {r:?}"),
                _ => {}
            },
            recv(p.host.events()) -> e => match e.expect("host events") {
                (_, Event::FileAccepted { file_id, offset }) => {
                    assert_eq!((file_id, offset), (id, 0));
                    pos = feed(&p, session, id, &data, pos);
                }
                (_, Event::FileWritable { .. }) => {
                    pos = feed(&p, session, id, &data, pos);
                }
                (_, Event::FileDone { file_id, result, .. }) => {
                    assert_eq!((file_id, result), (id, Ok(())));
                    sent_done = Some(());
                }
                (_, Event::Closed(r)) => panic!("host closed during the transfer: {r:?}"),
                _ => {}
            },
            default(deadline.saturating_duration_since(Instant::now())) => {
                panic!("transfer stalled at {pos} of {size} bytes");
            }
        }
    }
    assert!(received.expect("received") == data, "file differs");
}

/// Writes from `pos` until the session's staging window is full; returns the new position.
fn feed(p: &Pair, session: SessionHandle, id: u64, data: &[u8], mut pos: usize) -> usize {
    while pos < data.len() {
        let end = (pos + 256 * 1024).min(data.len());
        let bytes = data[pos..end].to_vec();
        let n = end - pos;
        let took = p
            .host
            .call(session, WAIT, move |s, now| s.write_file(now, id, &bytes))
            .expect("driver answers")
            .expect("write accepted");
        pos += took;
        if took < n {
            break;
        }
    }
    pos
}

#[test]
fn file_transfer_over_uring() {
    file_transfer(IoMode::Uring);
}

#[test]
fn file_transfer_over_portable() {
    file_transfer(IoMode::Portable);
}

#[test]
fn full_session_over_uring() {
    full_session(IoMode::Uring);
}

#[test]
fn full_session_over_portable() {
    full_session(IoMode::Portable);
}

/// A client that pins a different host identity is refused; both threads still shut down.
#[test]
fn wrong_pin_is_refused_and_shutdown_is_clean() {
    let deadline = Instant::now() + WAIT;
    let host_key = Arc::new(IdentityKey::from_seed([0x33; 32]).expect("key"));
    let client_key = Arc::new(IdentityKey::from_seed([0x44; 32]).expect("key"));
    let stranger = IdentityKey::from_seed([0x55; 32]).expect("key").id();
    let host_cfg = SessionConfig::new(Role::Host, PeerPolicy::Pinned(client_key.id()));
    let client_cfg = SessionConfig::new(Role::Client, PeerPolicy::Pinned(stranger));
    let host = HostDriver::spawn(
        socket(IoMode::Portable),
        Endpoint::new(host_cfg, host_key, 4),
        DriverConfig::default(),
    )
    .expect("host");
    let client = ClientDriver::connect(
        socket(IoMode::Portable),
        client_cfg,
        client_key,
        host.local_addr(),
        DriverConfig::default(),
    )
    .expect("client");
    loop {
        match recv(client.events(), deadline, "the refusal") {
            Event::Closed(CloseReason::HandshakeFailed(_)) => break,
            Event::Connected { .. } => panic!("connected to an unpinned host"),
            Event::Closed(r) => panic!("unexpected close: {r:?}"),
            _ => {}
        }
    }
    assert!(
        host.events()
            .try_iter()
            .all(|(_, e)| !matches!(e, Event::Connected { .. }))
    );
    client.shutdown().expect("client shutdown");
    host.shutdown().expect("host shutdown");
}

/// Commands for a session that does not exist are refused and counted; closing a session
/// from the host reaches the client as a goodbye.
#[test]
fn host_close_reaches_client_and_unknown_sessions_are_refused() {
    let deadline = Instant::now() + WAIT;
    let p = pair(IoMode::Portable);
    let session = connect(&p, deadline);
    let stranger = SessionHandle::new(session.index() + 7, session.generation());
    p.host
        .send_frame(
            stranger,
            vec![1; 100],
            FrameMeta::default(),
            Duration::from_millis(16),
        )
        .expect("queued");
    assert!(
        p.host.snapshot(stranger, WAIT).expect("answer").is_none(),
        "no such session"
    );
    p.host.close(session, "bye").expect("close queued");
    loop {
        match recv(p.client.events(), deadline, "the host's goodbye") {
            Event::Closed(CloseReason::Remote(reason)) => {
                assert_eq!(reason, "bye");
                break;
            }
            Event::Closed(r) => panic!("unexpected close: {r:?}"),
            _ => {}
        }
    }
    let Pair { host, client, .. } = p;
    client.shutdown().expect("client shutdown");
    let stats = host.shutdown().expect("host shutdown");
    assert_eq!(
        stats.commands_rejected, 1,
        "the frame for the unknown session"
    );
}

/// `send_raw` leaves from the driver's own socket (a NAT hole punch must use the session's
/// port), on both backends, for both driver kinds.
fn raw_datagrams_leave_from_the_session_port(mode: IoMode) {
    let p = pair(mode);
    let peer = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    peer.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let to = peer.local_addr().unwrap();
    p.host
        .send_raw(to, b"punch from the host".to_vec())
        .unwrap();
    let mut buf = [0u8; 64];
    let (n, from) = peer.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"punch from the host");
    assert_eq!(from, p.host.local_addr());
    p.client
        .send_raw(to, b"punch from the client".to_vec())
        .unwrap();
    // The client's handshake may arrive first: it goes to the host, never here.
    let (n, from) = peer.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"punch from the client");
    assert_eq!(from, p.client.local_addr());
}

#[test]
fn raw_datagrams_over_uring() {
    raw_datagrams_leave_from_the_session_port(IoMode::Uring);
}

#[test]
fn raw_datagrams_over_portable() {
    raw_datagrams_leave_from_the_session_port(IoMode::Portable);
}
