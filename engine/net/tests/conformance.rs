//! One conformance suite, instantiated for every backend (`uring`, `portable`).
//!
//! Loopback only; every wait is a receive with a timeout, never a sleep. An explicit backend
//! that cannot start fails its tests: nothing is skipped.

use std::io::IoSliceMut;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::RwLock;
use std::time::{Duration, Instant};

use wavry_net::{Backend, BackendKind, Config, Ecn, IoMode, NetSocket, RecvMeta, Transmit};

/// The fd-leak test takes this for writing so that no other test opens sockets meanwhile.
static FDS: RwLock<()> = RwLock::new(());

const WAIT: Duration = Duration::from_secs(3);
/// GSO/GRO and all of 127/8 on loopback are Linux facts the suite insists on there.
const LINUX: bool = cfg!(target_os = "linux");
const SLOT: usize = 1 << 16;

fn open(mode: IoMode, addr: &str, cfg: &Config) -> NetSocket {
    let addr: SocketAddr = addr.parse().expect("test address");
    let s = wavry_net::bind(addr, mode, cfg).expect("backend must start on this machine");
    let want = match mode {
        IoMode::Uring => BackendKind::Uring,
        _ => BackendKind::Portable,
    };
    assert_eq!(s.kind(), want);
    s
}

fn v4(mode: IoMode) -> NetSocket {
    open(mode, "127.0.0.1:0", &Config::default())
}

fn payload(seq: u32, len: usize) -> Vec<u8> {
    let mut v: Vec<u8> = (0..len).map(|i| (i as u32 ^ seq) as u8).collect();
    v[..4].copy_from_slice(&seq.to_be_bytes());
    v
}

/// One received buffer: its meta and a copy of its bytes.
struct Got {
    meta: RecvMeta,
    bytes: Vec<u8>,
}

impl Got {
    fn datagrams(&self) -> Vec<&[u8]> {
        self.bytes.chunks(self.meta.stride.max(1)).collect()
    }
}

/// Receives until `want` datagrams arrived (counting GRO segments), with buffers of `buf_len`.
fn recv_datagrams(s: &mut NetSocket, want: usize, buf_len: usize) -> Vec<Got> {
    let mut storage = vec![0u8; buf_len * 8];
    let mut got = Vec::new();
    let mut count = 0;
    let deadline = Instant::now() + WAIT;
    while count < want {
        assert!(
            Instant::now() < deadline,
            "only {count} of {want} datagrams arrived"
        );
        let mut meta = [RecvMeta::default(); 8];
        let mut iovs: Vec<IoSliceMut<'_>> =
            storage.chunks_mut(buf_len).map(IoSliceMut::new).collect();
        let n = s.recv(&mut iovs, &mut meta, Some(WAIT)).expect("recv");
        for (m, b) in meta.iter().zip(iovs.iter()).take(n) {
            count += m.datagrams().max(1);
            got.push(Got {
                meta: *m,
                bytes: b[..m.len].to_vec(),
            });
        }
    }
    got
}

fn send_one(s: &mut NetSocket, dst: SocketAddr, bytes: &[u8]) {
    s.send(&[Transmit {
        dst,
        segment_size: None,
        ecn: None,
        contents: bytes,
    }])
    .expect("send");
}

fn batch_send_and_receive(mode: IoMode) {
    let _g = FDS.read();
    let mut a = v4(mode);
    let mut b = v4(mode);
    let dst = b.local_addr().expect("addr");
    let bufs: Vec<Vec<u8>> = (0..64).map(|i| payload(i, 1200)).collect();
    let tx: Vec<Transmit<'_>> = bufs
        .iter()
        .map(|p| Transmit {
            dst,
            segment_size: None,
            ecn: None,
            contents: p,
        })
        .collect();
    a.send(&tx).expect("batch send");
    let got = recv_datagrams(&mut b, 64, SLOT);
    let mut seen: Vec<Vec<u8>> = got
        .iter()
        .flat_map(|g| g.datagrams().into_iter().map(<[u8]>::to_vec))
        .collect();
    seen.sort();
    let mut want = bufs.clone();
    want.sort();
    assert_eq!(seen, want, "every datagram arrives intact");
    let src = a.local_addr().expect("addr");
    for g in &got {
        assert_eq!(g.meta.src, src);
        assert_eq!(g.meta.dst_ip, Some(IpAddr::V4(Ipv4Addr::LOCALHOST)));
        assert!(!g.meta.truncated);
    }
}

fn receive_survives_running_out_of_ring_buffers(mode: IoMode) {
    let _g = FDS.read();
    // Two provided buffers (uring): the multishot receive ends with ENOBUFS again and again and
    // must be re-armed each time; the socket queue holds the datagrams meanwhile.
    let cfg = Config {
        uring_buffers: 2,
        ..Config::default()
    };
    let mut a = v4(mode);
    let mut b = open(mode, "127.0.0.1:0", &cfg);
    let dst = b.local_addr().expect("addr");
    let bufs: Vec<Vec<u8>> = (0..500).map(|i| payload(i, 1200)).collect();
    // 50 at a time: far more than the ring holds, little enough for a default-sized SO_RCVBUF
    // where SO_RCVBUFFORCE is not permitted.
    for chunk in bufs.chunks(50) {
        let tx: Vec<Transmit<'_>> = chunk
            .iter()
            .map(|p| Transmit {
                dst,
                segment_size: None,
                ecn: None,
                contents: p,
            })
            .collect();
        a.send(&tx).expect("send");
        let got = recv_datagrams(&mut b, chunk.len(), SLOT);
        let mut seen: Vec<&[u8]> = got.iter().map(|g| g.bytes.as_slice()).collect();
        seen.sort();
        let mut want: Vec<&[u8]> = chunk.iter().map(Vec::as_slice).collect();
        want.sort();
        assert_eq!(seen, want);
    }
    // Every stall was counted (and none lost a datagram); the portable backend receives into
    // the caller's buffers, so it never stalls on its own.
    let stalls = b.recv_buffer_stalls();
    match b.kind() {
        BackendKind::Uring => assert!(stalls >= 10, "{stalls} stalls counted"),
        BackendKind::Portable => assert_eq!(stalls, 0),
    }
}

fn gso_batch_is_split_for_a_non_gro_receiver(mode: IoMode) {
    let _g = FDS.read();
    let mut a = v4(mode);
    let cfg = Config {
        gro: false,
        ..Config::default()
    };
    let mut b = open(mode, "127.0.0.1:0", &cfg);
    assert_eq!(b.gro_segments(), 1);
    // Linux facts; elsewhere the backend sends the segments one by one and the rest holds.
    if LINUX {
        assert!(a.max_gso_segments() >= 54, "GSO works on this machine");
    }
    // 10 full segments and a short tail.
    let mut contents = Vec::new();
    for i in 0..10 {
        contents.extend(payload(i, 1200));
    }
    contents.extend(payload(10, 500));
    let dst = b.local_addr().expect("addr");
    a.send(&[Transmit {
        dst,
        segment_size: Some(1200),
        ecn: None,
        contents: &contents,
    }])
    .expect("gso send");
    let got = recv_datagrams(&mut b, 11, SLOT);
    assert_eq!(got.len(), 11, "one datagram per buffer without GRO");
    let joined: Vec<u8> = got.iter().flat_map(|g| g.bytes.clone()).collect();
    assert_eq!(joined, contents, "kernel split the batch in order");
    for g in &got[..10] {
        assert_eq!((g.meta.len, g.meta.stride), (1200, 1200));
    }
    assert_eq!(got[10].meta.len, 500);
}

fn gro_coalesces_a_gso_batch(mode: IoMode) {
    let _g = FDS.read();
    let mut a = v4(mode);
    let mut b = v4(mode);
    if LINUX {
        assert!(b.gro_segments() > 1, "GRO works on this machine");
    }
    let mut contents = Vec::new();
    for i in 0..20 {
        contents.extend(payload(i, 1200));
    }
    let dst = b.local_addr().expect("addr");
    a.send(&[Transmit {
        dst,
        segment_size: Some(1200),
        ecn: None,
        contents: &contents,
    }])
    .expect("gso send");
    let got = recv_datagrams(&mut b, 20, SLOT);
    assert!(
        !LINUX
            || got
                .iter()
                .any(|g| g.meta.stride == 1200 && g.meta.len > 1200),
        "at least one coalesced super-datagram with stride 1200"
    );
    let joined: Vec<u8> = got.iter().flat_map(|g| g.bytes.clone()).collect();
    assert_eq!(joined, contents);
}

fn gro_batch_larger_than_a_buffer_is_split_not_cut(mode: IoMode) {
    let _g = FDS.read();
    let mut a = v4(mode);
    let mut b = v4(mode);
    let mut contents = Vec::new();
    for i in 0..5 {
        contents.extend(payload(i, 1200));
    }
    let dst = b.local_addr().expect("addr");
    a.send(&[Transmit {
        dst,
        segment_size: Some(1200),
        ecn: None,
        contents: &contents,
    }])
    .expect("gso send");
    // 2500-byte buffers hold two whole datagrams each.
    let got = recv_datagrams(&mut b, 5, 2500);
    assert!(got.iter().all(|g| !g.meta.truncated && g.meta.len <= 2400));
    let joined: Vec<u8> = got.iter().flat_map(|g| g.bytes.clone()).collect();
    assert_eq!(joined, contents);
}

fn borrowed_receive_sees_whole_batches(mode: IoMode) {
    let _g = FDS.read();
    let mut a = v4(mode);
    let mut b = v4(mode);
    let dst = b.local_addr().expect("addr");
    let mut contents = Vec::new();
    for i in 0..20 {
        contents.extend(payload(i, 1200));
    }
    for _ in 0..2 {
        a.send(&[Transmit {
            dst,
            segment_size: Some(1200),
            ecn: None,
            contents: &contents,
        }])
        .expect("gso send");
    }
    // Take two datagrams by copy first; the borrowed receive continues from there.
    let mut small = [0u8; 2500];
    let mut meta = [RecvMeta::default()];
    let n = b
        .recv(&mut [IoSliceMut::new(&mut small)], &mut meta, Some(WAIT))
        .expect("recv");
    assert_eq!((n, meta[0].len, meta[0].stride), (1, 2400, 1200));
    let mut joined = small[..2400].to_vec();
    let mut coalesced = false;
    let deadline = Instant::now() + WAIT;
    while joined.len() < contents.len() * 2 {
        assert!(Instant::now() < deadline, "got {} bytes", joined.len());
        b.recv_with(Some(WAIT), &mut |m, bytes| {
            assert_eq!(m.len, bytes.len());
            assert!(!m.truncated);
            assert_eq!(m.src, a.local_addr().expect("addr"));
            coalesced |= m.len > m.stride;
            joined.extend_from_slice(bytes);
        })
        .expect("recv_with");
    }
    assert!(coalesced || !LINUX, "GRO batches arrive whole");
    assert_eq!(joined, [contents.clone(), contents].concat());
}

/// `forward_with`: datagrams chosen per batch go on from the receive buffer, rewritten in
/// place, to two destinations; a dropped one splits a run; a range past the batch is counted,
/// not sent; the forwarder is dropped with its last sends just submitted.
fn forwarding_sends_from_the_receive_buffer(mode: IoMode) {
    const SENDS: u32 = 40;
    const PER: u32 = 20;
    let _g = FDS.read();
    let mut a = v4(mode);
    let mut f = v4(mode);
    let mut b = v4(mode);
    let mut c = v4(mode);
    let (fa, ba, ca) = (
        f.local_addr().expect("addr"),
        b.local_addr().expect("addr"),
        c.local_addr().expect("addr"),
    );
    let skipped = |seq: u32| seq % 7 == 3;
    let to_c = |seq: u32| seq % 5 == 0 || seq % 64 > 40;
    let mut want_b = Vec::new();
    let mut want_c = Vec::new();
    for k in 0..SENDS {
        let mut contents = Vec::new();
        for i in 0..PER {
            let seq = k * PER + i;
            let p = payload(seq, 1200);
            contents.extend_from_slice(&p);
            let mut fwd = p;
            fwd[4] = 0xAB;
            if skipped(seq) {
            } else if to_c(seq) {
                want_c.push(fwd);
            } else {
                want_b.push(fwd);
            }
        }
        a.send(&[Transmit {
            dst: fa,
            segment_size: Some(1200),
            ecn: None,
            contents: &contents,
        }])
        .expect("gso send");
    }
    let mut seen = 0u32;
    let mut batches = 0u64;
    let deadline = Instant::now() + WAIT;
    while seen < SENDS * PER {
        assert!(Instant::now() < deadline, "forwarder saw {seen} datagrams");
        batches += f
            .forward_with(Some(WAIT), &mut |m, bytes, fw| {
                assert_eq!(m.len, bytes.len());
                let stride = m.stride.max(1);
                for (i, d) in bytes.chunks_mut(stride).enumerate() {
                    seen += 1;
                    let seq = u32::from_be_bytes(d[..4].try_into().expect("4 bytes"));
                    d[4] = 0xAB;
                    let at = i * stride;
                    if !skipped(seq) {
                        let dst = if to_c(seq) { ca } else { ba };
                        assert!(fw.push(dst, at..at + d.len()));
                    }
                }
                assert!(
                    fw.push(ba, m.len..m.len + 10),
                    "queued; refused when sending"
                );
            })
            .expect("forward_with") as u64;
    }
    assert_eq!(f.forward_failures(), batches, "one bad range per batch");
    drop(f);
    for (sock, want) in [(&mut b, want_b), (&mut c, want_c)] {
        let got = recv_datagrams(sock, want.len(), SLOT);
        let arrived: Vec<&[u8]> = got.iter().flat_map(Got::datagrams).collect();
        assert_eq!(arrived.len(), want.len());
        assert!(
            arrived.iter().zip(&want).all(|(g, w)| g == w),
            "in order, rewritten"
        );
        assert!(got.iter().all(|g| g.meta.src == fa));
    }
}

fn zero_copy_sends_deliver(mode: IoMode) {
    let _g = FDS.read();
    // SEND_ZC on uring (two completions per send); the portable backend ignores the switch.
    let cfg = Config {
        send_zc: true,
        ..Config::default()
    };
    let mut a = open(mode, "127.0.0.1:0", &cfg);
    let mut b = v4(mode);
    let dst = b.local_addr().expect("addr");
    let mut contents = Vec::new();
    for i in 0..10 {
        contents.extend(payload(i, 1200));
    }
    for _ in 0..3 {
        a.send(&[
            Transmit {
                dst,
                segment_size: Some(1200),
                ecn: None,
                contents: &contents,
            },
            Transmit {
                dst,
                segment_size: None,
                ecn: None,
                contents: b"tail",
            },
        ])
        .expect("zero-copy send");
        let got = recv_datagrams(&mut b, 11, SLOT);
        let joined: Vec<u8> = got.iter().flat_map(|g| g.bytes.clone()).collect();
        assert_eq!(joined, [contents.as_slice(), b"tail"].concat());
    }
}

fn truncation_is_reported(mode: IoMode) {
    let _g = FDS.read();
    let mut a = v4(mode);
    let mut b = v4(mode);
    let dst = b.local_addr().expect("addr");
    let big = payload(1, 1200);
    let small = payload(2, 50);
    send_one(&mut a, dst, &big);
    send_one(&mut a, dst, &small);
    let got = recv_datagrams(&mut b, 2, 100);
    assert_eq!(got.len(), 2);
    assert!(
        got[0].meta.truncated,
        "a 1200 B datagram in 100 B is flagged"
    );
    assert_eq!(got[0].meta.len, 100);
    assert_eq!(got[0].bytes, big[..100]);
    assert!(!got[1].meta.truncated, "the next datagram is whole");
    assert_eq!(got[1].bytes, small);
}

fn ipv6_loopback(mode: IoMode) {
    let _g = FDS.read();
    let mut a = open(mode, "[::1]:0", &Config::default());
    let mut b = open(mode, "[::1]:0", &Config::default());
    let dst = b.local_addr().expect("addr");
    let mut contents = Vec::new();
    for i in 0..4 {
        contents.extend(payload(i, 1200));
    }
    a.send(&[Transmit {
        dst,
        segment_size: Some(1200),
        ecn: None,
        contents: &contents,
    }])
    .expect("send v6");
    let got = recv_datagrams(&mut b, 4, SLOT);
    let joined: Vec<u8> = got.iter().flat_map(|g| g.bytes.clone()).collect();
    assert_eq!(joined, contents);
    for g in &got {
        assert_eq!(g.meta.src, a.local_addr().expect("addr"));
        assert_eq!(g.meta.dst_ip, Some(IpAddr::V6(Ipv6Addr::LOCALHOST)));
    }
}

fn dual_stack_any_serves_ipv4(mode: IoMode) {
    let _g = FDS.read();
    let mut server = open(mode, "[::]:0", &Config::default());
    let port = server.local_addr().expect("addr").port();
    let mut client = v4(mode);
    send_one(
        &mut client,
        SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
        b"hello",
    );
    let got = recv_datagrams(&mut server, 1, SLOT);
    let src = client.local_addr().expect("addr");
    assert_eq!(got[0].meta.src, src, "IPv4-mapped source reads as IPv4");
    assert_eq!(got[0].meta.dst_ip, Some(IpAddr::V4(Ipv4Addr::LOCALHOST)));
    send_one(&mut server, src, b"back");
    let back = recv_datagrams(&mut client, 1, SLOT);
    assert_eq!(back[0].bytes, b"back");
    assert_eq!(back[0].meta.src.port(), port);
}

fn source_and_destination_are_reported(mode: IoMode) {
    let _g = FDS.read();
    let mut b = open(mode, "0.0.0.0:0", &Config::default());
    let port = b.local_addr().expect("addr").port();
    let mut a = v4(mode);
    // 127.0.0.2 is loopback too: the reported destination must be the one actually used.
    let to = if LINUX {
        Ipv4Addr::new(127, 0, 0, 2)
    } else {
        Ipv4Addr::LOCALHOST
    };
    send_one(&mut a, SocketAddr::from((to, port)), b"x");
    let got = recv_datagrams(&mut b, 1, SLOT);
    assert_eq!(got[0].meta.src, a.local_addr().expect("addr"));
    assert_eq!(got[0].meta.dst_ip, Some(IpAddr::V4(to)));
}

fn ecn_is_carried(mode: IoMode) {
    let _g = FDS.read();
    let mut a = v4(mode);
    let mut b = v4(mode);
    let dst = b.local_addr().expect("addr");
    a.send(&[Transmit {
        dst,
        segment_size: None,
        ecn: Some(Ecn::Ect0),
        contents: b"ecn",
    }])
    .expect("send");
    let got = recv_datagrams(&mut b, 1, SLOT);
    assert_eq!(got[0].meta.ecn, Some(Ecn::Ect0));
}

fn icmp_errors_are_not_fatal(mode: IoMode) {
    let _g = FDS.read();
    for icmp_errors in [false, true] {
        let cfg = Config {
            icmp_errors,
            ..Config::default()
        };
        let mut a = open(mode, "127.0.0.1:0", &cfg);
        let mut b = open(mode, "127.0.0.1:0", &cfg);
        let closed = {
            let s = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
            s.local_addr().expect("addr")
        };
        for _ in 0..3 {
            a.send(&[Transmit {
                dst: closed,
                segment_size: None,
                ecn: None,
                contents: b"nobody",
            }])
            .expect("a send to a closed port is not an error");
        }
        // The ICMP port-unreachable is pending now (with IP_RECVERR): a receive must not fail.
        let mut buf = [0u8; 64];
        let mut meta = [RecvMeta::default()];
        let n = a
            .recv(
                &mut [IoSliceMut::new(&mut buf)],
                &mut meta,
                Some(Duration::from_millis(20)),
            )
            .expect("recv after ICMP error");
        assert_eq!(n, 0);
        let dst = b.local_addr().expect("addr");
        send_one(&mut a, dst, b"ping");
        let got = recv_datagrams(&mut b, 1, SLOT);
        assert_eq!(got[0].bytes, b"ping");
        send_one(&mut b, a.local_addr().expect("addr"), b"pong");
        let got = recv_datagrams(&mut a, 1, SLOT);
        assert_eq!(got[0].bytes, b"pong", "icmp_errors={icmp_errors}");
    }
}

fn receive_times_out_empty(mode: IoMode) {
    let _g = FDS.read();
    let mut a = v4(mode);
    let mut buf = [0u8; 64];
    let mut meta = [RecvMeta::default()];
    let t = Instant::now();
    let n = a
        .recv(
            &mut [IoSliceMut::new(&mut buf)],
            &mut meta,
            Some(Duration::from_millis(30)),
        )
        .expect("recv");
    assert_eq!(n, 0);
    let waited = t.elapsed();
    assert!(waited >= Duration::from_millis(25), "waited {waited:?}");
    assert!(waited < Duration::from_secs(2), "waited {waited:?}");
}

fn backend_moves_between_threads(mode: IoMode) {
    let _g = FDS.read();
    let mut a = v4(mode);
    let mut b = v4(mode);
    let dst = b.local_addr().expect("addr");
    send_one(&mut a, dst, b"one");
    let mut b = std::thread::spawn(move || {
        let got = recv_datagrams(&mut b, 1, SLOT);
        assert_eq!(got[0].bytes, b"one");
        b
    })
    .join()
    .expect("receiver thread");
    send_one(&mut a, dst, b"two");
    let got = recv_datagrams(&mut b, 1, SLOT);
    assert_eq!(got[0].bytes, b"two");
    // Dropped here, on another thread than the one that armed the receive.
}

fn sharded_sockets_share_a_port(mode: IoMode) {
    let _g = FDS.read();
    let addr: SocketAddr = "127.0.0.1:0".parse().expect("addr");
    let mut shards =
        wavry_net::bind_sharded(addr, 2, mode, &Config::default()).expect("sharded bind");
    let dst = shards[0].local_addr().expect("addr");
    assert_eq!(shards[1].local_addr().expect("addr"), dst);
    let mut senders: Vec<NetSocket> = (0..8).map(|_| v4(mode)).collect();
    for (i, s) in senders.iter_mut().enumerate() {
        send_one(s, dst, &payload(i as u32, 100));
    }
    let mut total = 0;
    let deadline = Instant::now() + WAIT;
    while total < 8 {
        assert!(Instant::now() < deadline, "only {total} of 8 arrived");
        for sh in &mut shards {
            let mut buf = [0u8; 2048];
            let mut meta = [RecvMeta::default()];
            total += sh
                .recv(
                    &mut [IoSliceMut::new(&mut buf)],
                    &mut meta,
                    Some(Duration::from_millis(5)),
                )
                .expect("recv");
        }
    }
    assert_eq!(total, 8);
}

#[cfg(target_os = "linux")]
fn fd_count() -> usize {
    std::fs::read_dir("/proc/self/fd").expect("procfs").count()
}

#[cfg(target_os = "linux")]
fn drop_closes_every_fd(mode: IoMode) {
    let _g = FDS.write();
    let before = fd_count();
    {
        let mut a = v4(mode);
        let mut b = v4(mode);
        let dst = b.local_addr().expect("addr");
        send_one(&mut a, dst, b"armed");
        recv_datagrams(&mut b, 1, SLOT);
        let shards = wavry_net::bind_sharded(
            "127.0.0.1:0".parse().expect("addr"),
            2,
            mode,
            &Config::default(),
        )
        .expect("sharded");
        assert!(fd_count() > before);
        drop(shards);
    }
    assert_eq!(fd_count(), before, "every socket and ring fd is closed");
}

macro_rules! conformance {
    ($name:ident, $mode:expr) => {
        mod $name {
            use super::*;

            #[test]
            fn batch_send_and_receive() {
                super::batch_send_and_receive($mode);
            }
            #[test]
            fn receive_survives_running_out_of_ring_buffers() {
                super::receive_survives_running_out_of_ring_buffers($mode);
            }
            #[test]
            fn gso_batch_is_split_for_a_non_gro_receiver() {
                super::gso_batch_is_split_for_a_non_gro_receiver($mode);
            }
            #[test]
            fn gro_coalesces_a_gso_batch() {
                super::gro_coalesces_a_gso_batch($mode);
            }
            #[test]
            fn gro_batch_larger_than_a_buffer_is_split_not_cut() {
                super::gro_batch_larger_than_a_buffer_is_split_not_cut($mode);
            }
            #[test]
            fn borrowed_receive_sees_whole_batches() {
                super::borrowed_receive_sees_whole_batches($mode);
            }
            #[test]
            fn forwarding_sends_from_the_receive_buffer() {
                super::forwarding_sends_from_the_receive_buffer($mode);
            }
            #[test]
            fn zero_copy_sends_deliver() {
                super::zero_copy_sends_deliver($mode);
            }
            #[test]
            fn truncation_is_reported() {
                super::truncation_is_reported($mode);
            }
            #[test]
            fn ipv6_loopback() {
                super::ipv6_loopback($mode);
            }
            #[test]
            fn dual_stack_any_serves_ipv4() {
                super::dual_stack_any_serves_ipv4($mode);
            }
            #[test]
            fn source_and_destination_are_reported() {
                super::source_and_destination_are_reported($mode);
            }
            #[test]
            fn ecn_is_carried() {
                super::ecn_is_carried($mode);
            }
            #[test]
            fn icmp_errors_are_not_fatal() {
                super::icmp_errors_are_not_fatal($mode);
            }
            #[test]
            fn receive_times_out_empty() {
                super::receive_times_out_empty($mode);
            }
            #[test]
            fn backend_moves_between_threads() {
                super::backend_moves_between_threads($mode);
            }
            #[test]
            fn sharded_sockets_share_a_port() {
                super::sharded_sockets_share_a_port($mode);
            }
            #[cfg(target_os = "linux")]
            #[test]
            fn drop_closes_every_fd() {
                super::drop_closes_every_fd($mode);
            }
        }
    };
}

#[cfg(target_os = "linux")]
conformance!(uring, IoMode::Uring);
conformance!(portable, IoMode::Portable);
