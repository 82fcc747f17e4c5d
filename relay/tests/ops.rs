//! Operating `wavry-relay` as a real process (registered with a real `wavry-master`):
//! `/metrics` is OpenMetrics text that follows the shared conventions (control/README.md,
//! "Metrics": prefix `wavry_relay_`, one constant label `relay_id`) and counts junk it was sent
//! (random bytes in the kernel's socket-filter drops, a bad relay header in `invalid_packets`); `--probe`, the container health check, exits 0 for a running relay's
//! --health-listen (also when it comes from the environment as `0.0.0.0`) and 1 with one line
//! on stderr where nothing listens.
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
