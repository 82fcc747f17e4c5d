//! Operating `wavry-relay` as a real process (registered with a real `wavry-master`):
//! `/metrics` is OpenMetrics text that follows the shared conventions (control/README.md,
//! "Metrics": prefix `wavry_relay_`, one constant label `relay_id`) and counts junk it was sent
//! (random bytes in the kernel's socket-filter drops, a bad relay header in `invalid_packets`);
//! `--probe`, the container health check, exits 0 for a running relay's --health-listen (also
//! when it comes from the environment as `0.0.0.0`) and 1 with one line on stderr where nothing
//! listens; `--cpus` pins the forwarding threads, and a CPU the process
//! may not use fails at start with the allowed ones named; without CAP_BPF the relay says why
//! and runs the prefix kernel filter (`/health`).
#![allow(clippy::unwrap_used)]

mod common;

use std::net::UdpSocket;
use std::time::{Duration, Instant};

use common::*;
use wavry_control_testkit::openmetrics::{self, Exposition};
use wavry_control_testkit::{TempDir, assert_probe};
use wavry_rift::wire::{RELAY_MAGIC, RELAY_VERSION};

async fn scrape(relay: &Relay) -> Exposition {
    let text = metrics(relay).await;
    let e = openmetrics::parse(&text).unwrap_or_else(|err| panic!("{err:#}\n{text}"));
    e.check_conventions("wavry_relay_", &["relay_id"])
        .unwrap_or_else(|err| panic!("{err:#}\n{text}"));
    assert!(
        e.samples()
            .all(|s| s.label("relay_id") == Some(relay.id.as_str())),
        "{text}"
    );
    e
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_follow_the_conventions_and_count_junk() {
    let dir = TempDir::new("relay-ops").unwrap();
    let master = spawn_master(&dir.path().join("master")).await;
    std::fs::create_dir_all(dir.path().join("relay")).unwrap();
    let relay = spawn_relay(&master, &dir.path().join("relay"), free_udp_port(), &[]).await;
    let before = scrape(&relay).await;
    let invalid = |e: &Exposition| e.count("wavry_relay_invalid_packets_total", &[]).unwrap();
    let filtered = |e: &Exposition| {
        e.count("wavry_relay_socket_dropped_packets_total", &[])
            .unwrap()
    };
    assert_eq!(
        before.family("wavry_relay_packets_forwarded").unwrap().kind,
        "counter"
    );
    assert_eq!(
        before
            .family("wavry_relay_forward_latency_seconds")
            .unwrap()
            .kind,
        "histogram"
    );
    assert_eq!(before.family("wavry_relay_shards").unwrap().kind, "gauge");

    // One datagram that is not a relay datagram (the kernel's socket filter drops it), and one
    // with a relay header of an unknown type (the core refuses it).
    let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
    peer.send_to(b"not a relay datagram", relay.udp).unwrap();
    let mut unknown_type = [0x11u8; 20];
    unknown_type[..4].copy_from_slice(&[RELAY_MAGIC, RELAY_VERSION, 0xEE, 0]);
    peer.send_to(&unknown_type, relay.udp).unwrap();
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        let now = scrape(&relay).await;
        if invalid(&now) == invalid(&before) + 1 && filtered(&now) == filtered(&before) + 1 {
            break;
        }
        assert!(
            Instant::now() < end,
            "the datagrams were never counted: invalid {} -> {}, socket drops {} -> {}",
            invalid(&before),
            invalid(&now),
            filtered(&before),
            filtered(&now)
        );
        // Poll interval of a bounded wait: the shard counts asynchronously.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_answers_for_a_running_relay_and_fails_where_nothing_listens() {
    let dir = TempDir::new("relay-probe").unwrap();
    let master = spawn_master(&dir.path().join("master")).await;
    std::fs::create_dir_all(dir.path().join("relay")).unwrap();
    let relay = spawn_relay(&master, &dir.path().join("relay"), free_udp_port(), &[]).await;
    assert_probe(
        relay_bin(),
        "wavry-relay",
        "--health-listen",
        "WAVRY_RELAY_HEALTH_LISTEN",
        relay.svc.port,
    )
    .await;
}

/// The `Cpus_allowed_list` of the relay thread named `name` in process `pid`.
fn thread_cpus(pid: u32, name: &str) -> Option<String> {
    for t in std::fs::read_dir(format!("/proc/{pid}/task"))
        .ok()?
        .flatten()
    {
        let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
        if comm.trim() == name {
            let status = std::fs::read_to_string(t.path().join("status")).ok()?;
            return status
                .lines()
                .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
                .map(|v| v.trim().to_owned());
        }
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cpus_pins_the_forwarding_threads_and_a_wrong_cpu_fails_at_start() {
    let dir = TempDir::new("relay-cpus").unwrap();
    let master = spawn_master(&dir.path().join("master")).await;
    std::fs::create_dir_all(dir.path().join("relay")).unwrap();
    let relay = spawn_relay(
        &master,
        &dir.path().join("relay"),
        free_udp_port(),
        &["--threads", "2", "--cpus", "0"],
    )
    .await;
    let pid = relay.svc.pid().unwrap();
    // Each thread pins itself first thing; wait (bounded) until both have run that far.
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        let cpus = ["relay-shard-0", "relay-shard-1"].map(|t| thread_cpus(pid, t));
        if cpus.iter().all(|c| c.as_deref() == Some("0")) {
            break;
        }
        assert!(
            Instant::now() < end,
            "threads not pinned to CPU 0: {cpus:?}"
        );
        // Poll interval of a bounded wait.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let out = std::process::Command::new(relay_bin())
        .args(["--listen", "127.0.0.1:0", "--health-listen", "127.0.0.1:0"])
        .args(["--master-public-key", &"ab".repeat(32)])
        .args(["--cpus", "1023"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--cpus: CPU 1023 is not one this process may run on"),
        "{stderr}"
    );
}

/// GET `path` on `addr`; the body of a 200 answer, None otherwise (not serving yet).
fn get(addr: std::net::SocketAddr, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: relay\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    head.contains(" 200 ").then(|| body.to_owned())
}

#[test]
fn without_cap_bpf_the_relay_says_why_and_runs_the_prefix_filter() {
    let health = std::net::SocketAddr::from((
        [127, 0, 0, 1],
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port(),
    ));
    let udp = format!("127.0.0.1:{}", free_udp_port());
    // Root without CAP_BPF and CAP_SYS_ADMIN in its bounding set: eBPF maps are refused.
    let mut child = std::process::Command::new("setpriv")
        .args(["--bounding-set=-bpf,-sys_admin,-perfmon"])
        .arg(relay_bin())
        .args(["--listen", &udp, "--health-listen", &health.to_string()])
        .args(["--master-public-key", &"ab".repeat(32)])
        .args(["--master-url", "http://127.0.0.1:9", "--log-level", "warn"])
        // The relay logs to stdout; at warn, a few lines.
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("setpriv (util-linux)");
    let end = Instant::now() + Duration::from_secs(20);
    let body = loop {
        if let Some(b) = get(health, "/health") {
            break b;
        }
        assert!(Instant::now() < end, "the relay never served /health");
        assert!(child.try_wait().unwrap().is_none(), "the relay exited");
        // Poll interval of a bounded wait for another process to serve.
        std::thread::sleep(Duration::from_millis(20));
    };
    let health: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(health["kernel_filter"], "prefix", "{health}");
    child.kill().unwrap();
    child.wait().unwrap();
    let mut log = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take().unwrap(), &mut log).unwrap();
    assert!(
        log.contains("the bound-peers kernel filter is unavailable; using the prefix filter")
            && log.contains("needs root or CAP_BPF"),
        "{log}"
    );
}
