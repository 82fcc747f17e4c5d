//! The relay on AF_XDP (`--io xdp`), in network namespaces this test creates (as root) and
//! removes, also when it fails:
//!
//! ```text
//!   sender ns (client, thief, junk) ── r0 [relay ns: wavry-relay --io xdp on r0,r1] r1 ── receiver ns (server)
//! ```
//!
//! The relay namespace does not route, so every datagram that crosses went through the relay
//! process. Sessions with real leases (byte-exact both ways, retransmissions), every lease
//! rejection, a stolen token, NAT rebinding and junk, all on the XDP path; ping (with ARP and
//! neighbour discovery) and another UDP port still reach the relay namespace's kernel while
//! the program is attached; the program is gone when the relay exits. Then the fallback:
//! `--io auto` on an interface without native XDP says why and forwards on io_uring, and
//! `--io xdp` there exits with the reason.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use time::OffsetDateTime;
use uuid::Uuid;
use wavry_control_testkit::TempDir;
use wavry_netns::{Options, Role, Topology};
use wavry_relay::peer::Answer;
use wavry_rift::identity::IdentityKey;
use wavry_rift::lease::{LeaseClaims, LeaseRole, LeaseSigner};
use wavry_rift::wire::{PeerRole, RejectReason};

mod common;

use common::*;

const PORT: u16 = 4000;
const HEALTH: u16 = 9091;

/// The stand-in master: its key signs the leases, the relay gets its public half.
fn master_key() -> IdentityKey {
    IdentityKey::from_seed([0x4D; 32]).unwrap()
}

fn lease(
    signer: &LeaseSigner,
    holder: &Peer,
    sid: Uuid,
    role: LeaseRole,
    rid: &str,
    exp_s: i64,
) -> String {
    let now = OffsetDateTime::now_utc();
    signer
        .issue(&LeaseClaims {
            sub: holder.id(),
            wavry_id: Some(holder.id()),
            sid,
            role,
            rid: rid.into(),
            kid: Some(signer.key_id().to_owned()),
            jti: None,
            iat: now - time::Duration::seconds(700),
            nbf: now - time::Duration::seconds(700),
            exp: now + time::Duration::seconds(exp_s),
            slimit: None,
            hlimit: None,
        })
        .unwrap()
}

/// A relay process in the relay namespace; killed on drop.
struct NsRelay {
    child: Child,
}

impl Drop for NsRelay {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// GET `path` on the relay's health port from inside the relay namespace.
fn get(topo: &Topology, path: &str) -> Option<String> {
    let path = path.to_owned();
    topo.enter(Role::Relay, move || {
        let mut s = TcpStream::connect(("127.0.0.1", HEALTH)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        write!(s, "GET {path} HTTP/1.0\r\nHost: relay\r\n\r\n").ok()?;
        let mut body = String::new();
        s.read_to_string(&mut body).ok()?;
        Some(body.split_once("\r\n\r\n")?.1.to_owned())
    })
    .unwrap()
}

/// A socket bound in `role`'s namespace, with a bounded read timeout.
fn socket_in(topo: &Topology, role: Role) -> UdpSocket {
    let s = topo
        .enter(role, || UdpSocket::bind("0.0.0.0:0"))
        .unwrap()
        .unwrap();
    s.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    s
}

/// Streams a child's log lines (tracing writes to stdout) into a channel, so that waits on
/// them are bounded.
fn lines(child: &mut Child) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    let err = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for l in BufReader::new(err).lines().map_while(Result::ok) {
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    rx
}

/// Waits (bounded) for a line containing `want`; returns everything read so far.
fn wait_line(rx: &mpsc::Receiver<String>, want: &str, log: &mut String) -> bool {
    let end = Instant::now() + Duration::from_secs(30);
    while let Some(left) = end.checked_duration_since(Instant::now()) {
        match rx.recv_timeout(left) {
            Ok(l) => {
                log.push_str(&l);
                log.push('\n');
                if l.contains(want) {
                    return true;
                }
            }
            Err(_) => return false,
        }
    }
    false
}

fn run(cmd: &mut Command) -> (bool, String) {
    let out = cmd.output().unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

const GATES: [(&str, &str); 2] = [
    ("WAVRY_RELAY_ALLOW_PUBLIC_BIND", "1"),
    ("WAVRY_RELAY_ALLOW_HOST_PROD_BIND", "1"),
];

#[test]
fn sessions_rejections_rebinding_and_junk_on_af_xdp_in_namespaces() {
    assert!(
        wavry_netns::has_root(),
        "this test needs root and iproute2 (cargo xtask test runs it as root)"
    );
    let topo = Topology::new(Options::default()).unwrap();
    let dir = TempDir::new("relay-xdp").unwrap();
    let key = master_key();
    let signer = LeaseSigner::new(&key, None).unwrap();
    let r0 = topo.relay_if_sender_side.clone();
    let r1 = topo.relay_if_receiver_side.clone();
    let mut child = topo
        .exec(Role::Relay, relay_bin())
        .args(["--io", "xdp", "--xdp-iface", &format!("{r0},{r1}")])
        .args(["--listen", &format!("0.0.0.0:{PORT}")])
        .args([
            "--public-addr",
            &format!("{}:{PORT}", topo.relay_ip_sender_side),
        ])
        .args(["--health-listen", &format!("127.0.0.1:{HEALTH}")])
        .args(["--master-public-key", &hex::encode(key.id().as_bytes())])
        // Registration fails (no master here); forwarding does not need it.
        .args(["--master-url", "http://127.0.0.1:9"])
        .args(["--key", &dir.path().join("relay.key").display().to_string()])
        .args(["--reject-rate-per-ip", "100", "--max-bitrate-kbps", "50000"])
        .args(["--cleanup-interval-secs", "1"])
        .envs(GATES)
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let log_rx = lines(&mut child);
    let relay = NsRelay { child };
    let mut log = String::new();
    assert!(
        wait_line(&log_rx, "wavry-relay starting", &mut log),
        "the relay did not start on AF_XDP:\n{log}"
    );
    assert!(
        log.contains("backend=\"xdp-copy\"") || log.contains("backend=xdp-copy"),
        "{log}"
    );
    let health = get(&topo, "/health").expect("/health");
    let health: serde_json::Value = serde_json::from_str(&health).unwrap();
    assert_eq!(health["backend"], "xdp-copy", "{health}");
    let rid = health["relay_id"].as_str().unwrap().to_owned();
    let (ip_link_ok, links) = run(topo.exec(Role::Relay, "ip").args(["link", "show", &r0]));
    assert!(
        ip_link_ok && links.contains("xdp"),
        "program attached: {links}"
    );

    let rc = SocketAddr::new(IpAddr::V4(topo.relay_ip_sender_side), PORT);
    let rs = SocketAddr::new(IpAddr::V4(topo.relay_ip_receiver_side), PORT);
    let client = Peer {
        sock: socket_in(&topo, Role::Sender),
        key: IdentityKey::from_seed([1; 32]).unwrap(),
    };
    let server = Peer {
        sock: socket_in(&topo, Role::Receiver),
        key: IdentityKey::from_seed([2; 32]).unwrap(),
    };
    let sid_uuid = Uuid::new_v4();
    let sid = *sid_uuid.as_bytes();
    let ct = lease(&signer, &client, sid_uuid, LeaseRole::Client, &rid, 600);
    let st = lease(&signer, &server, sid_uuid, LeaseRole::Server, &rid, 600);

    // Rejections, each with its reason, answered over the kernel path from the XDP path.
    assert_eq!(
        client.present(rc, &rid, sid, PeerRole::Server, &ct, true),
        Answer::Reject(RejectReason::InvalidSignature),
        "wrong role"
    );
    let forger = LeaseSigner::new(&IdentityKey::from_seed([0x66; 32]).unwrap(), None).unwrap();
    let forged = lease(&forger, &client, sid_uuid, LeaseRole::Client, &rid, 600);
    assert_eq!(
        client.present(rc, &rid, sid, PeerRole::Client, &forged, true),
        Answer::Reject(RejectReason::InvalidSignature),
        "forged"
    );
    let expired = lease(&signer, &client, sid_uuid, LeaseRole::Client, &rid, -120);
    assert_eq!(
        client.present(rc, &rid, sid, PeerRole::Client, &expired, true),
        Answer::Reject(RejectReason::Expired),
        "expired"
    );
    let foreign = lease(
        &signer,
        &client,
        sid_uuid,
        LeaseRole::Client,
        "elsewhere",
        600,
    );
    assert_eq!(
        client.present(rc, &rid, sid, PeerRole::Client, &foreign, true),
        Answer::Reject(RejectReason::WrongRelay),
        "another relay's lease"
    );

    // Both peers present, each to the relay address on its side.
    assert!(matches!(
        client.present(rc, &rid, sid, PeerRole::Client, &ct, true),
        Answer::Ack(_)
    ));
    assert!(matches!(
        server.present(rs, &rid, sid, PeerRole::Server, &st, true),
        Answer::Ack(_)
    ));

    // Byte-exact both ways; each side sees the relay address it talks to as the source.
    let mut rx = [0u8; 2048];
    for i in 0..20u8 {
        let payload: Vec<u8> = (0..1200u16).map(|j| (j as u8) ^ i).collect();
        let sent = client.forward(rc, sid, &payload);
        let (n, from) = server.sock.recv_from(&mut rx).unwrap_or_else(|e| {
            let (_, ns) = run(topo.exec(Role::Receiver, "nstat").args(["-a"]));
            let (_, nr) = run(topo.exec(Role::Relay, "ip").args(["-s", "link"]));
            let (_, nrc) = run(topo.exec(Role::Receiver, "ip").args(["-s", "link"]));
            panic!(
                "client -> server: {e}\n{ns}\n{nr}\n{nrc}\n{}",
                get(&topo, "/metrics").unwrap()
            )
        });
        assert_eq!((&rx[..n], from), (&sent[..], rs), "client -> server #{i}");
        let back: Vec<u8> = payload.iter().rev().copied().collect();
        let sent = server.forward(rs, sid, &back);
        let (n, from) = client.sock.recv_from(&mut rx).expect("server -> client");
        assert_eq!((&rx[..n], from), (&sent[..], rc), "server -> client #{i}");
    }
    // Retransmissions of the same bytes pass (no replay window at the relay).
    let retx = client.forward(rc, sid, b"RI same packet again");
    client.forward(rc, sid, b"RI same packet again");
    assert_eq!(server.recv().as_deref(), Some(&retx[..]));
    assert_eq!(server.recv().as_deref(), Some(&retx[..]));

    // A captured token from another address without the holder's signature is refused.
    let thief = Peer {
        sock: socket_in(&topo, Role::Sender),
        key: IdentityKey::from_seed([9; 32]).unwrap(),
    };
    assert_eq!(
        thief.present(rc, &rid, sid, PeerRole::Client, &ct, false),
        Answer::Reject(RejectReason::InvalidSignature),
        "stolen token"
    );
    let sent = server.forward(rs, sid, b"still to the real client");
    assert_eq!(client.recv().as_deref(), Some(&sent[..]));

    // NAT rebinding: a new source port, a signed re-PRESENT, and the stream follows.
    let moved = Peer {
        sock: socket_in(&topo, Role::Sender),
        key: IdentityKey::from_seed([1; 32]).unwrap(),
    };
    assert!(matches!(
        moved.present(rc, &rid, sid, PeerRole::Client, &ct, true),
        Answer::Ack(_)
    ));
    let sent = server.forward(rs, sid, b"to the new port");
    assert_eq!(moved.recv().as_deref(), Some(&sent[..]));

    // Junk to the relay port: dropped, nothing reaches the server.
    let before = get(&topo, "/metrics").unwrap();
    let junk = socket_in(&topo, Role::Sender);
    let mut x = 0x9E37_79B9_u32;
    for i in 0..200usize {
        let mut d = vec![0u8; 40 + i % 900];
        for b in &mut d {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            *b = x as u8;
        }
        junk.send_to(&d, rc).unwrap();
    }
    assert_eq!(server.recv(), None, "junk was forwarded");

    // Traffic that is not the relay's still reaches the relay namespace's kernel: ping with
    // fresh ARP and neighbour discovery, and UDP to another port.
    for role in [Role::Sender, Role::Relay] {
        run(topo.exec(role, "ip").args(["neigh", "flush", "all"]));
    }
    let (ok, out) = run(topo.exec(Role::Sender, "ping").args([
        "-c",
        "1",
        "-W",
        "2",
        &topo.relay_ip_sender_side.to_string(),
    ]));
    assert!(ok, "ping over IPv4 with the program attached: {out}");
    let (ok, out) = run(topo.exec(Role::Sender, "ping").args([
        "-6",
        "-c",
        "1",
        "-W",
        "2",
        &topo.relay_ip6_sender_side.to_string(),
    ]));
    assert!(ok, "ping over IPv6 with the program attached: {out}");
    let other = topo
        .enter(Role::Relay, || UdpSocket::bind(("0.0.0.0", PORT + 1)))
        .unwrap()
        .unwrap();
    other
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    junk.send_to(
        b"not for the relay",
        SocketAddr::new(IpAddr::V4(topo.relay_ip_sender_side), PORT + 1),
    )
    .unwrap();
    let (n, _) = other.recv_from(&mut rx).expect("another UDP port");
    assert_eq!(&rx[..n], b"not for the relay");

    let m = |t: &str, name: &str| metric(t, name);
    // The program's counters reach /metrics at each cleanup (every second here): bounded wait.
    let end = Instant::now() + Duration::from_secs(10);
    let text = loop {
        let text = get(&topo, "/metrics").unwrap();
        if m(&text, "wavry_relay_xdp_redirected_packets_total") >= 44 || Instant::now() > end {
            break text;
        }
        // Poll interval of a bounded wait on another process's counters.
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(m(&text, "wavry_relay_xdp"), 1, "{text}");
    assert_eq!(
        m(&text, "wavry_relay_xdp_zero_copy"),
        0,
        "veth has no zero-copy AF_XDP"
    );
    assert!(
        m(&text, "wavry_relay_xdp_redirected_packets_total") >= 44,
        "frames went through the program: {text}"
    );
    assert!(m(&text, "wavry_relay_packets_forwarded_total") >= 44);
    assert_eq!(
        m(&text, "wavry_relay_kernel_path_forwards_total"),
        0,
        "every forward went out on the XDP path"
    );
    assert_eq!(m(&text, "wavry_relay_nat_rebind_events_total"), 1);
    assert!(m(&text, "wavry_relay_binding_rejects_total") >= 1);
    assert_eq!(m(&text, "wavry_relay_wrong_relay_rejects_total"), 1);
    assert_eq!(m(&text, "wavry_relay_expired_lease_rejects_total"), 1);
    assert!(
        m(&text, "wavry_relay_dropped_packets_total")
            >= m(&before, "wavry_relay_dropped_packets_total") + 200,
        "junk counted"
    );
    assert_eq!(
        m(&text, "wavry_relay_packets_forwarded_total"),
        m(&before, "wavry_relay_packets_forwarded_total")
    );
    drop(text);

    // The relay is stopped and its program must be gone. The kernel may finish releasing the
    // link just after the process is reaped (deferred file release on a loaded machine), so
    // the check polls, bounded.
    drop(relay);
    let deadline = Instant::now() + Duration::from_secs(10);
    let links = loop {
        let (_, links) = run(topo.exec(Role::Relay, "ip").args(["link", "show", &r0]));
        if !links.contains("xdp") || Instant::now() > deadline {
            break links;
        }
        std::thread::yield_now();
    };
    assert!(!links.contains("xdp"), "program detached on exit: {links}");
}

#[test]
fn without_native_xdp_auto_falls_back_to_io_uring_and_xdp_refuses() {
    let key = master_key();
    let pk = hex::encode(key.id().as_bytes());
    let base = |io: &str, iface: &str, port: u16, hp: u16| {
        let mut c = Command::new(relay_bin());
        c.args(["--io", io, "--xdp-iface", iface])
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--health-listen", &format!("127.0.0.1:{hp}")])
            .args([
                "--master-public-key",
                &pk,
                "--master-url",
                "http://127.0.0.1:9",
            ])
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped());
        c
    };
    // `lo` runs XDP in generic mode only.
    let hp = wavry_control_testkit::free_port().unwrap();
    let mut child = base("auto", "lo", free_udp_port(), hp).spawn().unwrap();
    let rx = lines(&mut child);
    let guard = NsRelay { child };
    let mut log = String::new();
    assert!(wait_line(&rx, "wavry-relay starting", &mut log), "{log}");
    assert!(
        log.contains("AF_XDP unavailable"),
        "one line says why: {log}"
    );
    assert!(log.contains("generic mode only"), "{log}");
    assert!(!log.contains("backend=xdp"), "{log}");
    drop(guard);

    // Explicit --io xdp: no fallback, a typed error naming the cause, non-zero exit.
    for (iface, why) in [("lo", "generic mode only"), ("nosuchif9", "nosuchif9")] {
        let out = base(
            "xdp",
            iface,
            free_udp_port(),
            wavry_control_testkit::free_port().unwrap(),
        )
        .output()
        .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "--io xdp on {iface} must fail");
        assert!(err.contains("--io xdp") && err.contains(why), "{err}");
    }
    let _ = Ipv4Addr::LOCALHOST;
}
