//! The AF_XDP shell forwards without heap allocation: after warm-up, 20 000 datagrams go
//! sender → relay (AF_XDP, in a namespace this test creates as root) → receiver while a
//! counting global allocator counts the relay thread's allocations (only that thread is
//! counted, so the harness's own threads do not interfere).
#![allow(clippy::unwrap_used)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use wavry_net::xdp::{XdpMode, XdpOptions, XdpPorts, interface_addrs};
use wavry_netns::{Options, Role, Topology};
use wavry_relay::core::stats::Stats;
use wavry_relay::peer::{Answer, decode_answer, encode_forward, encode_present};
use wavry_relay::shell::{Clock, ShardOptions};
use wavry_relay::xdp::run_xdp_shard;
use wavry_relay::{CoreConfig, LeaseAuth, RelayCore};
use wavry_rift::wire::PeerRole;

struct Counting;

thread_local! {
    static COUNTED: Cell<bool> = const { Cell::new(false) };
}
static ALLOCS: AtomicUsize = AtomicUsize::new(0);

fn count() {
    if COUNTED.with(Cell::get) {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
    }
}

#[allow(unsafe_code)]
// SAFETY: every method forwards to `System` with the caller's arguments unchanged; the only
// extra work is reading a const-initialised thread-local flag and bumping an atomic, neither
// of which allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: forwarded contract of `GlobalAlloc::alloc`.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded contract of `GlobalAlloc::dealloc`.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: forwarded contract of `GlobalAlloc::alloc_zeroed`.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        // SAFETY: forwarded contract of `GlobalAlloc::realloc`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const PORT: u16 = 4000;

fn socket_in(topo: &Topology, role: Role) -> UdpSocket {
    let s = topo
        .enter(role, || UdpSocket::bind("0.0.0.0:0"))
        .unwrap()
        .unwrap();
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    s
}

/// Presents (insecure dev auth: any token) until the relay acknowledges.
fn present(sock: &UdpSocket, to: SocketAddr, sid: [u8; 16], role: PeerRole) {
    let mut buf = [0u8; 256];
    let mut rx = [0u8; 256];
    let n = encode_present(&mut buf, false, sid, role, "dev-token", None).unwrap();
    for _ in 0..10 {
        sock.send_to(&buf[..n], to).unwrap();
        if let Ok(m) = sock.recv(&mut rx) {
            let (_, answer) = decode_answer(&rx[..m]).unwrap();
            assert!(matches!(answer, Answer::Ack(_)), "{answer:?}");
            return;
        }
    }
    panic!("no answer to PRESENT");
}

#[test]
fn af_xdp_forwarding_makes_no_allocation() {
    assert!(
        wavry_netns::has_root(),
        "this test needs root and iproute2 (cargo xtask test runs it as root)"
    );
    let topo = Topology::new(Options::default()).unwrap();
    let ifaces = vec![
        topo.relay_if_sender_side.clone(),
        topo.relay_if_receiver_side.clone(),
    ];
    let (mut ports, kernel) = {
        let ifaces = ifaces.clone();
        topo.enter(Role::Relay, move || {
            let kernel = UdpSocket::bind(("0.0.0.0", PORT)).unwrap();
            let mut addrs = Vec::new();
            for i in &ifaces {
                addrs.extend(interface_addrs(i).unwrap());
            }
            let opts = XdpOptions {
                mode: XdpMode::Copy,
                ..XdpOptions::default()
            };
            (
                XdpPorts::open(&ifaces, PORT, &addrs, &opts).unwrap(),
                kernel,
            )
        })
        .unwrap()
    };
    let clock = Clock::new();
    let mut core = RelayCore::new(
        CoreConfig::new("relay-xdp-noalloc"),
        LeaseAuth::InsecureDev,
        Arc::new(Stats::default()),
        clock.now().mono_ns,
    );
    let stats = Arc::clone(core.stats());
    let stop = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&stop);
    let shard = std::thread::spawn(move || {
        COUNTED.with(|c| c.set(true));
        let opts = ShardOptions {
            cleanup_interval: Duration::from_secs(3600),
            poll: Duration::from_millis(20),
        };
        run_xdp_shard(&mut ports, &kernel, &mut core, clock, opts, &flag)
    });

    let rc = SocketAddr::new(IpAddr::V4(topo.relay_ip_sender_side), PORT);
    let rs = SocketAddr::new(IpAddr::V4(topo.relay_ip_receiver_side), PORT);
    let (client, server) = (
        socket_in(&topo, Role::Sender),
        socket_in(&topo, Role::Receiver),
    );
    let sid = [0x7A; 16];
    present(&client, rc, sid, PeerRole::Client);
    present(&server, rs, sid, PeerRole::Server);

    let mut buf = [0u8; 256];
    let mut rx = [0u8; 512];
    let mut run = |n: usize| {
        for i in 0..n {
            let payload = [(i % 251) as u8; 200];
            let len = encode_forward(&mut buf, sid, &payload).unwrap();
            client.send_to(&buf[..len], rc).unwrap();
            let got = server.recv(&mut rx).expect("forwarded datagram");
            assert_eq!(&rx[..got], &buf[..len], "datagram {i}");
        }
    };
    run(1000);
    let before = ALLOCS.load(Ordering::Relaxed);
    run(20_000);
    let after = ALLOCS.load(Ordering::Relaxed);
    stop.store(true, Ordering::Relaxed);
    shard.join().unwrap().unwrap();
    assert_eq!(
        stats.kernel_path_forwards.get(),
        0,
        "every datagram took the AF_XDP path"
    );
    assert!(stats.packets_forwarded.get() >= 21_000);
    assert_eq!(
        after - before,
        0,
        "allocations in the relay thread while forwarding 20 000 datagrams"
    );
}
