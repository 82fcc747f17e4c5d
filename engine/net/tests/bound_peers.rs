//! The bound-peers eBPF socket filter on real loopback sockets (Linux, root or CAP_BPF, a
//! build with clang): data datagrams pass only from bound (session id, address) pairs, control
//! datagrams pass, junk is dropped, and the kernel counts every drop. Loopback delivers in the
//! sender's system call, so a datagram that passes after a dropped one proves the drop, and the
//! drop count is final when `send_to` returns.
#![cfg(all(target_os = "linux", not(wavry_no_bpf)))]

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use wavry_net::bound_peers::{BoundPeers, BoundPeersConfig, key};
use wavry_net::filter::socket_drops;

const FORWARD: u8 = 0x10;
const PRESENT: u8 = 0x01;

fn config(max_pairs: u32) -> BoundPeersConfig {
    BoundPeersConfig {
        prefix: [0x57, 1],
        min_len: 20,
        guard_offset: 2,
        guard_value: FORWARD,
        id_offset: 4,
        max_pairs,
    }
}

/// A relay-shaped datagram: magic, version, type, flags, id, then `pad` bytes.
fn datagram(kind: u8, id: [u8; 16], pad: usize) -> Vec<u8> {
    let mut d = vec![0x57, 1, kind, 0];
    d.extend_from_slice(&id);
    d.resize(20 + pad, 0xAB);
    d
}

struct Rig {
    rx: UdpSocket,
    to: SocketAddr,
}

impl Rig {
    fn new(bind: &str) -> Self {
        let rx = UdpSocket::bind(bind).unwrap();
        rx.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let to = rx.local_addr().unwrap();
        Self { rx, to }
    }

    /// Sends `d` from `tx`, then a control datagram as a marker; returns whether `d` arrived
    /// (it is then received before the marker).
    fn passes(&self, tx: &UdpSocket, d: &[u8]) -> bool {
        let marker = datagram(PRESENT, [0xEE; 16], 40);
        tx.send_to(d, self.to).unwrap();
        tx.send_to(&marker, self.to).unwrap();
        let mut buf = [0u8; 2048];
        let (n, from) = self.rx.recv_from(&mut buf).unwrap();
        assert_eq!(from, tx.local_addr().unwrap());
        if buf[..n] == marker[..] {
            return false;
        }
        assert_eq!(&buf[..n], d);
        let (n, _) = self.rx.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], &marker[..], "the marker follows");
        true
    }
}

#[test]
fn only_bound_pairs_may_send_data_and_the_kernel_counts_the_rest() {
    let rig = Rig::new("127.0.0.1:0");
    let mut f = BoundPeers::load(&config(16)).expect("load (needs root or CAP_BPF)");
    f.attach(&rig.rx).unwrap();
    let a = UdpSocket::bind("127.0.0.1:0").unwrap();
    let b = UdpSocket::bind("127.0.0.1:0").unwrap();
    let (sid, other) = ([7u8; 16], [9u8; 16]);
    let fwd = datagram(FORWARD, sid, 1180);

    assert!(!rig.passes(&a, &fwd), "nothing bound yet");
    f.insert(&sid, a.local_addr().unwrap()).unwrap();
    assert_eq!(f.pairs(), 1);
    assert!(rig.passes(&a, &fwd), "the bound pair");
    assert!(!rig.passes(&b, &fwd), "same id, another port");
    assert!(
        !rig.passes(&a, &datagram(FORWARD, other, 100)),
        "bound address, another session"
    );
    assert!(
        rig.passes(&b, &datagram(PRESENT, sid, 300)),
        "control datagrams pass to user space"
    );
    assert!(
        !rig.passes(&b, &[0x57, 1, FORWARD]),
        "shorter than the header"
    );
    assert!(!rig.passes(&b, &[0x42; 1200]), "not the prefix");
    let drops_before = socket_drops(&rig.rx).unwrap();
    assert_eq!(drops_before, 5);

    f.insert(&sid, a.local_addr().unwrap()).unwrap();
    assert_eq!(f.pairs(), 1, "insert is idempotent");
    f.remove(&sid, a.local_addr().unwrap()).unwrap();
    f.remove(&sid, a.local_addr().unwrap()).unwrap();
    assert_eq!(f.pairs(), 0);
    assert!(!rig.passes(&a, &fwd), "unbound again");
    assert_eq!(socket_drops(&rig.rx).unwrap(), drops_before + 1);
}

#[test]
fn ipv4_peers_of_a_dual_stack_socket_match_their_ipv4_keys() {
    let rx = socket2::Socket::new(
        socket2::Domain::IPV6,
        socket2::Type::DGRAM,
        Some(socket2::Protocol::UDP),
    )
    .unwrap();
    rx.set_only_v6(false).unwrap();
    rx.bind(&"[::]:0".parse::<SocketAddr>().unwrap().into())
        .unwrap();
    let rx: UdpSocket = rx.into();
    rx.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let port = rx.local_addr().unwrap().port();
    let rig = Rig {
        rx,
        to: SocketAddr::from(([127, 0, 0, 1], port)),
    };
    let mut f = BoundPeers::load(&config(4)).unwrap();
    f.attach(&rig.rx).unwrap();
    let a = UdpSocket::bind("127.0.0.1:0").unwrap();
    let sid = [3u8; 16];
    // The dual-stack socket reports the peer as ::ffff:127.0.0.1; either form is one key.
    let mapped = match a.local_addr().unwrap() {
        SocketAddr::V4(v4) => SocketAddr::new(v4.ip().to_ipv6_mapped().into(), v4.port()),
        SocketAddr::V6(_) => unreachable!(),
    };
    assert_eq!(key(&sid, mapped), key(&sid, a.local_addr().unwrap()));
    f.insert(&sid, mapped).unwrap();
    let fwd = datagram(FORWARD, sid, 64);
    let marker = datagram(PRESENT, [0xEE; 16], 40);
    a.send_to(&fwd, rig.to).unwrap();
    a.send_to(&marker, rig.to).unwrap();
    let mut buf = [0u8; 2048];
    let (n, _) = rig.rx.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], &fwd[..], "the IPv4 peer's data passes");
}

#[test]
fn ipv6_peers_are_matched_by_their_ipv6_address() {
    let rig = Rig::new("[::1]:0");
    let mut f = BoundPeers::load(&config(4)).unwrap();
    f.attach(&rig.rx).unwrap();
    let a = UdpSocket::bind("[::1]:0").unwrap();
    let b = UdpSocket::bind("[::1]:0").unwrap();
    let sid = [5u8; 16];
    f.insert(&sid, a.local_addr().unwrap()).unwrap();
    let fwd = datagram(FORWARD, sid, 500);
    assert!(rig.passes(&a, &fwd));
    assert!(!rig.passes(&b, &fwd));
}

#[test]
fn a_full_table_refuses_the_insert_instead_of_evicting() {
    let mut f = BoundPeers::load(&config(2)).unwrap();
    let addr = |p: u16| SocketAddr::from(([127, 0, 0, 1], p));
    f.insert(&[1; 16], addr(1)).unwrap();
    f.insert(&[1; 16], addr(2)).unwrap();
    assert!(f.insert(&[1; 16], addr(3)).is_err());
    assert_eq!(f.pairs(), 2);
}
