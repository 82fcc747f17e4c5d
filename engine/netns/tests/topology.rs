//! The sender ─ relay ─ receiver namespaces as the relay's tests and benchmarks rely on them:
//! each end reaches the relay over IPv4 and IPv6, the ends cannot reach each other except
//! through a process in the relay namespace, everything is gone after drop (also after a
//! panic), CPU time is counted per core, and threaded NAPI yields pinnable kernel threads.
//!
//! Needs root and iproute2 (as `cargo xtask test` provides); fails with a clear message without.

#![cfg(target_os = "linux")]

use std::io::ErrorKind;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::process::Command;
use std::time::{Duration, Instant};

use wavry_netns::{CpuTime, Options, Role, Topology, has_root, pin};

/// Long enough for a datagram over veth on a loaded machine, short enough for the negative case.
const WAIT: Duration = Duration::from_secs(2);

fn require_root() {
    assert!(
        has_root(),
        "these tests build network namespaces: run them as root with iproute2 installed"
    );
}

/// A UDP socket bound to `ip` (port chosen by the kernel) in `role`'s namespace.
fn socket_in(topology: &Topology, role: Role, ip: IpAddr) -> UdpSocket {
    let socket = topology
        .enter(role, || UdpSocket::bind(SocketAddr::new(ip, 0)))
        .expect("enter namespace")
        .expect("bind");
    socket.set_read_timeout(Some(WAIT)).unwrap();
    socket
}

/// Receives one datagram, or `None` if none comes within the socket's read timeout.
fn receive(socket: &UdpSocket) -> Option<(Vec<u8>, SocketAddr)> {
    let mut buf = [0u8; 2048];
    match socket.recv_from(&mut buf) {
        Ok((len, from)) => Some((buf[..len].to_vec(), from)),
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => None,
        Err(e) => panic!("recv_from: {e}"),
    }
}

fn namespaces_listed() -> String {
    let out = Command::new("ip").args(["netns", "list"]).output().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap()
}

/// Checks one address family: both ends reach the relay, the relay carries a datagram from
/// sender to receiver, and the sender cannot reach the receiver directly.
fn check_paths(
    topology: &Topology,
    any: IpAddr,
    sender_ip: IpAddr,
    relay_sender_side: IpAddr,
    relay_receiver_side: IpAddr,
    receiver_ip: IpAddr,
) {
    let relay_s = socket_in(topology, Role::Relay, relay_sender_side);
    let relay_r = socket_in(topology, Role::Relay, relay_receiver_side);
    let sender = socket_in(topology, Role::Sender, any);
    let receiver = socket_in(topology, Role::Receiver, receiver_ip);

    // sender → relay, from the sender's own address.
    sender
        .send_to(b"to relay from sender", relay_s.local_addr().unwrap())
        .unwrap();
    let (data, from) = receive(&relay_s).expect("sender → relay");
    assert_eq!(data, b"to relay from sender");
    assert_eq!(from.ip(), sender_ip);

    // receiver → relay, likewise.
    receiver
        .send_to(b"to relay from receiver", relay_r.local_addr().unwrap())
        .unwrap();
    let (data, from) = receive(&relay_r).expect("receiver → relay");
    assert_eq!(data, b"to relay from receiver");
    assert_eq!(from.ip(), receiver_ip);

    // The relay process carries a datagram across: the receiver socket does receive.
    sender
        .send_to(b"relayed", relay_s.local_addr().unwrap())
        .unwrap();
    let (data, _) = receive(&relay_s).expect("sender → relay (to relay)");
    relay_r
        .send_to(&data, receiver.local_addr().unwrap())
        .unwrap();
    let (data, from) = receive(&receiver).expect("relay → receiver");
    assert_eq!(data, b"relayed");
    assert_eq!(from.ip(), relay_receiver_side);

    // Straight to the receiver's address: the relay namespace does not route it.
    for _ in 0..3 {
        sender
            .send_to(b"direct", receiver.local_addr().unwrap())
            .unwrap();
    }
    assert_eq!(
        receive(&receiver),
        None,
        "a datagram crossed the relay namespace without a relay process"
    );
}

#[test]
fn ends_reach_the_relay_but_not_each_other() {
    require_root();
    let topology = Topology::new(Options::default()).expect("topology");
    let names = Role::ALL.map(|role| topology.namespace(role).to_owned());
    let listed = namespaces_listed();
    for name in &names {
        assert!(listed.contains(name.as_str()), "{name} not in {listed}");
    }

    check_paths(
        &topology,
        IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        topology.sender_ip.into(),
        topology.relay_ip_sender_side.into(),
        topology.relay_ip_receiver_side.into(),
        topology.receiver_ip.into(),
    );
    check_paths(
        &topology,
        IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        topology.sender_ip6.into(),
        topology.relay_ip6_sender_side.into(),
        topology.relay_ip6_receiver_side.into(),
        topology.receiver_ip6.into(),
    );

    // What makes the negative checks hold: the relay namespace is a host, not a router.
    for file in [
        "/proc/sys/net/ipv4/ip_forward",
        "/proc/sys/net/ipv6/conf/all/forwarding",
    ] {
        let out = topology
            .exec(Role::Relay, "cat")
            .arg(file)
            .output()
            .unwrap();
        assert!(out.status.success());
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "0", "{file}");
    }

    drop(topology);
    let listed = namespaces_listed();
    for name in &names {
        assert!(!listed.contains(name.as_str()), "{name} still in {listed}");
    }
}

/// The control for the negative checks above: with forwarding switched on in the relay
/// namespace, the same direct datagrams do arrive, so their absence is the relay's doing.
#[test]
fn direct_path_opens_only_when_the_relay_namespace_forwards() {
    require_root();
    let topology = Topology::new(Options::default()).expect("topology");
    let status = topology
        .exec(Role::Relay, "sh")
        .args([
            "-c",
            "echo 1 > /proc/sys/net/ipv4/ip_forward && \
             echo 1 > /proc/sys/net/ipv6/conf/all/forwarding",
        ])
        .status()
        .unwrap();
    assert!(status.success());
    for (any, receiver_ip, sender_ip) in [
        (
            IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            IpAddr::V4(topology.receiver_ip),
            IpAddr::V4(topology.sender_ip),
        ),
        (
            IpAddr::V6(Ipv6Addr::UNSPECIFIED),
            IpAddr::V6(topology.receiver_ip6),
            IpAddr::V6(topology.sender_ip6),
        ),
    ] {
        let sender = socket_in(&topology, Role::Sender, any);
        let receiver = socket_in(&topology, Role::Receiver, receiver_ip);
        sender
            .send_to(b"routed", receiver.local_addr().unwrap())
            .unwrap();
        let (data, from) = receive(&receiver).expect("routed through a forwarding relay ns");
        assert_eq!(data, b"routed");
        assert_eq!(from.ip(), sender_ip);
    }
}

#[test]
fn namespaces_are_removed_when_a_test_panics() {
    require_root();
    let mut names = Vec::new();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let topology = Topology::new(Options::default()).expect("topology");
        names = Role::ALL
            .map(|role| topology.namespace(role).to_owned())
            .to_vec();
        panic!("a failing test");
    }));
    assert!(result.is_err());
    assert_eq!(names.len(), 3);
    let listed = namespaces_listed();
    for name in &names {
        assert!(!listed.contains(name.as_str()), "{name} still in {listed}");
    }
}

#[test]
fn concurrent_topologies_have_distinct_names_and_subnets() {
    require_root();
    let a = Topology::new(Options::default()).expect("topology a");
    let b = Topology::new(Options::default()).expect("topology b");
    assert_ne!(a.tag, b.tag);
    assert_ne!(a.relay_ns, b.relay_ns);
    assert_ne!(a.relay_if_sender_side, b.relay_if_sender_side);
    assert_ne!(a.sender_ip, b.sender_ip);
    assert_ne!(a.sender_ip6, b.sender_ip6);
    for name in [
        &a.sender_if,
        &a.relay_if_sender_side,
        &a.relay_if_receiver_side,
        &a.receiver_if,
    ] {
        assert!(name.len() <= 9, "{name} too long for napi/<if>- in a comm");
    }
}

#[test]
fn cpu_time_counts_a_busy_loop_on_its_core() {
    let first = CpuTime::read(&[0]).expect("/proc/stat");
    let busy = Duration::from_millis(300);
    std::thread::spawn(move || {
        pin(0, &[0]).expect("pin to cpu 0");
        let start = Instant::now();
        let mut x = 0u64;
        while start.elapsed() < busy {
            x = std::hint::black_box(x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1));
        }
    })
    .join()
    .unwrap();
    let second = CpuTime::read(&[0]).expect("/proc/stat");
    let third = CpuTime::read(&[0]).expect("/proc/stat");
    let spent = second.since(&first);
    // CPU 0 was busy (with us, or with whatever preempted us) for the whole 300 ms; allow for
    // jiffy granularity and time stolen by a hypervisor.
    assert!(
        spent > 0.05,
        "cpu0 busy {spent} s during a 300 ms busy loop"
    );
    assert!(second.seconds() >= first.seconds());
    assert!(third.seconds() >= second.seconds());
    assert!(third.since(&first) >= spent);
    assert!(
        second.since(&third) <= 0.0,
        "since() of a later reading saturates at 0"
    );
}

#[test]
fn cpu_time_of_a_missing_cpu_is_an_error() {
    let err = CpuTime::read(&[usize::from(u16::MAX)]).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
}

#[test]
fn threaded_napi_gives_the_relay_pinnable_napi_threads() {
    require_root();
    let queues = 2;
    let topology = Topology::new(Options {
        queues,
        gro: true,
        threaded_napi: true,
        ..Options::default()
    })
    .expect("topology");

    // One NAPI instance per receive queue of each relay interface.
    let relay = topology.napi_threads(Role::Relay);
    assert_eq!(
        relay.len(),
        2 * usize::from(queues),
        "napi threads {relay:?}"
    );
    // The end hosts get theirs too (one interface, two queues each).
    assert_eq!(
        topology.napi_threads(Role::Sender).len(),
        usize::from(queues)
    );
    assert_eq!(
        topology.napi_threads(Role::Receiver).len(),
        usize::from(queues)
    );
    for ifname in topology.interfaces(Role::Relay) {
        assert_eq!(
            wavry_netns::napi_threads_of(ifname).len(),
            usize::from(queues),
            "{ifname}"
        );
    }

    // Pinning a kernel thread takes effect.
    for &pid in &relay {
        pin(pid, &[0]).expect("pin a napi thread");
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let allowed = status
            .lines()
            .find_map(|line| line.strip_prefix("Cpus_allowed_list:"))
            .expect("Cpus_allowed_list")
            .trim();
        assert_eq!(allowed, "0", "napi thread {pid}");
    }

    // Traffic still flows through GRO-enabled, threaded interfaces.
    let relay_socket = socket_in(&topology, Role::Relay, topology.relay_ip_sender_side.into());
    let sender = socket_in(&topology, Role::Sender, Ipv4Addr::UNSPECIFIED.into());
    sender
        .send_to(b"through napi", relay_socket.local_addr().unwrap())
        .unwrap();
    let (data, _) = receive(&relay_socket).expect("sender → relay with threaded NAPI");
    assert_eq!(data, b"through napi");
}

#[test]
fn default_options_leave_napi_unthreaded() {
    require_root();
    let topology = Topology::new(Options::default()).expect("topology");
    assert!(topology.napi_threads(Role::Relay).is_empty());
}

#[test]
fn invalid_options_are_rejected_before_building() {
    let err = Topology::new(Options {
        queues: 0,
        ..Options::default()
    })
    .unwrap_err();
    assert!(matches!(err, wavry_netns::Error::InvalidOption(_)), "{err}");
}
