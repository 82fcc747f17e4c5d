//! End to end with real processes on loopback: `wavry-master` + `wavry-relay` (two steered
//! shards) + two UDP peers presenting real leases from the master. Byte-exact forwarding both
//! ways, every rejection reason, a stolen token without the holder's signature, NAT
//! rebinding, /metrics as Prometheus text, a restarted relay keeping its id, idle cleanup and
//! --max-sessions.
//!
//! Needs the master binary beside the relay's: `cargo test -p wavry-relay -p wavry-master`
//! (or `cargo build -p wavry-master` first).
#![allow(clippy::unwrap_used)]

use std::net::UdpSocket;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use time::OffsetDateTime;
use wavry_control_testkit::TempDir;
use wavry_relay::peer::Answer;
use wavry_rift::identity::IdentityKey;
use wavry_rift::lease::{LeaseClaims, LeaseRole, LeaseSigner};
use wavry_rift::wire::{PeerRole, RejectReason};

mod common;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn master_relay_and_two_peers_end_to_end() {
    let dir = TempDir::new("relay-e2e").unwrap();
    let master = spawn_master(dir.path()).await;
    // A second, fake relay so a lease for another relay can be had.
    let (code, body) = master
        .post(
            "/v1/relays/register",
            json!({"relay_id": "elsewhere", "endpoints": ["127.0.0.2:9"]}),
            RELAY_TOKEN,
        )
        .await;
    assert_eq!(code, 200, "{body}");
    let udp_port = free_udp_port();
    let mut relay = spawn_relay(&master, dir.path(), udp_port, &["--threads", "2"]).await;
    let (client, server) = (Peer::new(1), Peer::new(2));

    // Leases from the master: the requester is the client, the target the server (fault 3),
    // and the address handed out is the relay's real endpoint (fault 5).
    let g = master.lease(&client, &server, "elsewhere").await;
    assert_eq!(g["relay_id"], relay.id.as_str(), "{g}");
    assert_eq!(g["addr"], relay.udp.to_string(), "{g}");
    let (sid, sid_uuid) = sid_of(&g);
    let ct = g["requester"]["token"].as_str().unwrap().to_owned();
    let st = g["target"]["token"].as_str().unwrap().to_owned();
    let r = relay.udp;
    let rid = relay.id.clone();

    // Rejections, each with its reason.
    let thief = Peer::new(9);
    assert_eq!(
        client.present(r, &rid, sid, PeerRole::Server, &ct, true),
        Answer::Reject(RejectReason::InvalidSignature),
        "wrong role"
    );
    let forger = LeaseSigner::new(
        &IdentityKey::from_seed([0x66; 32]).unwrap(),
        Some(master.signer.key_id().to_owned()),
    )
    .unwrap();
    let forged = {
        let now = OffsetDateTime::now_utc();
        forger
            .issue(&LeaseClaims {
                sub: client.id(),
                wavry_id: Some(client.id()),
                sid: sid_uuid,
                role: LeaseRole::Client,
                rid: rid.clone(),
                kid: Some(forger.key_id().to_owned()),
                jti: None,
                iat: now,
                nbf: now,
                exp: now + time::Duration::seconds(600),
                slimit: None,
                hlimit: None,
            })
            .unwrap()
    };
    assert_eq!(
        thief.present(r, &rid, sid, PeerRole::Client, &forged, true),
        Answer::Reject(RejectReason::InvalidSignature),
        "forged"
    );
    let expired = master.forge_like_master(&client, sid_uuid, &rid, -120);
    assert_eq!(
        client.present(r, &rid, sid, PeerRole::Client, &expired, true),
        Answer::Reject(RejectReason::Expired),
        "expired"
    );
    let foreign = master.lease(&Peer::new(3), &Peer::new(4), &rid).await;
    assert_eq!(foreign["relay_id"], "elsewhere");
    let (fsid, _) = sid_of(&foreign);
    assert_eq!(
        Peer::new(3).present(
            r,
            &rid,
            fsid,
            PeerRole::Client,
            foreign["requester"]["token"].as_str().unwrap(),
            true
        ),
        Answer::Reject(RejectReason::WrongRelay),
        "foreign relay"
    );

    // Both peers present their own leases with their identity signatures.
    assert!(matches!(
        client.present(r, &rid, sid, PeerRole::Client, &ct, true),
        Answer::Ack(_)
    ));
    assert!(matches!(
        server.present(r, &rid, sid, PeerRole::Server, &st, true),
        Answer::Ack(_)
    ));

    // Byte-exact both ways (the two legs meet on one shard although the kernel would hash
    // their 4-tuples apart).
    for i in 0..20u8 {
        let payload: Vec<u8> = (0..1200u16).map(|j| (j as u8) ^ i).collect();
        let sent = client.forward(r, sid, &payload);
        assert_eq!(
            server.recv().as_deref(),
            Some(&sent[..]),
            "client -> server #{i}"
        );
        let back: Vec<u8> = payload.iter().rev().copied().collect();
        let sent = server.forward(r, sid, &back);
        assert_eq!(
            client.recv().as_deref(),
            Some(&sent[..]),
            "server -> client #{i}"
        );
    }
    // A retransmission of the same bytes passes too (no replay window at the relay).
    let retx = client.forward(r, sid, b"RI same packet again");
    client.forward(r, sid, b"RI same packet again");
    assert_eq!(server.recv().as_deref(), Some(&retx[..]));
    assert_eq!(server.recv().as_deref(), Some(&retx[..]));

    // The captured client token presented from another address without the holder's
    // signature is refused, and the binding stays where it was.
    assert_eq!(
        thief.present(r, &rid, sid, PeerRole::Client, &ct, false),
        Answer::Reject(RejectReason::InvalidSignature),
        "stolen token"
    );
    let sent = server.forward(r, sid, b"still to the real client");
    assert_eq!(client.recv().as_deref(), Some(&sent[..]));

    // NAT rebinding: the client's source port changes; a signed re-PRESENT moves it.
    let moved = Peer {
        sock: UdpSocket::bind("127.0.0.1:0").unwrap(),
        key: IdentityKey::from_seed([1; 32]).unwrap(),
    };
    moved
        .sock
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let t0 = Instant::now();
    assert!(matches!(
        moved.present(r, &rid, sid, PeerRole::Client, &ct, true),
        Answer::Ack(_)
    ));
    let sent = server.forward(r, sid, b"to the new port");
    assert_eq!(moved.recv().as_deref(), Some(&sent[..]));
    assert!(
        t0.elapsed() < Duration::from_secs(1),
        "recovered within 1 s"
    );

    // The kernel's bound-peers table follows the bindings (each change lands before its
    // ACK goes out): FORWARDs that carry the live session id from the thief and from the
    // client's old port are dropped before a shard sees them. The server's datagram after
    // them is queued behind them on the same shard, so once it arrives they were handled.
    thief.forward(r, sid, b"spoofed source");
    client.forward(r, sid, b"from the old port");
    let sent = server.forward(r, sid, b"after the spoofs");
    assert_eq!(moved.recv().as_deref(), Some(&sent[..]));

    // /metrics parses as Prometheus text and counted what happened.
    let text = metrics(&relay).await;
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (series, value) = line.rsplit_once(' ').unwrap();
        assert!(value.parse::<f64>().is_ok(), "{line}");
        assert!(
            series.starts_with("wavry_relay_") && series.contains("relay_id=\""),
            "{line}"
        );
    }
    assert!(metric(&text, "wavry_relay_packets_forwarded_total") >= 44);
    assert_eq!(metric(&text, "wavry_relay_nat_rebind_events_total"), 1);
    assert!(metric(&text, "wavry_relay_binding_rejects_total") >= 1);
    assert_eq!(metric(&text, "wavry_relay_wrong_relay_rejects_total"), 1);
    assert_eq!(metric(&text, "wavry_relay_expired_lease_rejects_total"), 1);
    assert_eq!(metric(&text, "wavry_relay_shards"), 2);
    assert_eq!(metric(&text, "wavry_relay_kernel_filter_bound_peers"), 1);
    assert_eq!(
        metric(&text, "wavry_relay_kernel_filter_pairs"),
        2,
        "the server and the client's new port"
    );
    assert_eq!(
        metric(&text, "wavry_relay_unknown_peer_packets_total"),
        0,
        "spoofed FORWARDs never reached a shard"
    );
    // Every forwarded datagram went through a receive batch the histograms saw.
    assert!(metric(&text, "wavry_relay_batch_datagrams_count") >= 1);
    assert!(metric(&text, "wavry_relay_forward_latency_seconds_count") >= 1);

    // Restart: same key, same id; then idle cleanup and --max-sessions on one shard. (A new
    // UDP port: the kernel tears an io_uring down asynchronously, so the old port may still be
    // held for a moment after the process is gone.)
    relay.svc.stop().await.unwrap();
    let relay2 = spawn_relay(
        &master,
        dir.path(),
        free_udp_port(),
        &[
            "--threads",
            "1",
            "--max-sessions",
            "1",
            "--load-shed-threshold-pct",
            "100",
            "--idle-timeout",
            "1",
            "--cleanup-interval-secs",
            "1",
        ],
    )
    .await;
    assert_eq!(relay2.id, rid, "a restarted relay keeps its id");
    let r = relay2.udp;
    let g1 = master
        .lease(&Peer::new(5), &Peer::new(6), "elsewhere")
        .await;
    let g2 = master
        .lease(&Peer::new(7), &Peer::new(8), "elsewhere")
        .await;
    let (s1, _) = sid_of(&g1);
    let (s2, _) = sid_of(&g2);
    let p5 = Peer::new(5);
    assert!(matches!(
        p5.present(
            r,
            &rid,
            s1,
            PeerRole::Client,
            g1["requester"]["token"].as_str().unwrap(),
            true
        ),
        Answer::Ack(_)
    ));
    let p7 = Peer::new(7);
    assert_eq!(
        p7.present(
            r,
            &rid,
            s2,
            PeerRole::Client,
            g2["requester"]["token"].as_str().unwrap(),
            true
        ),
        Answer::Reject(RejectReason::SessionFull),
        "--max-sessions 1"
    );
    // Bounded wait for the idle session to be cleaned up (1 s idle, 1 s cleanup).
    let end = Instant::now() + Duration::from_secs(15);
    loop {
        let h: Value = reqwest::get(format!("{}/health", relay2.svc.base))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if h["active_sessions"] == 0 {
            assert!(
                h["metrics"]["cleanup_idle_sessions"].as_u64().unwrap() >= 1,
                "{h}"
            );
            break;
        }
        assert!(Instant::now() < end, "idle session never cleaned up: {h}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(matches!(
        p7.present(
            r,
            &rid,
            s2,
            PeerRole::Client,
            g2["requester"]["token"].as_str().unwrap(),
            true
        ),
        Answer::Ack(_)
    ));
}

/// Runs the relay binary expecting it to refuse to start; returns its stderr.
fn refused(args: &[&str], envs: &[(&str, &str)]) -> String {
    let mut cmd = std::process::Command::new(relay_bin());
    cmd.args(args)
        .env_remove("WAVRY_RELAY_ALLOW_PUBLIC_BIND")
        .env_remove("WAVRY_RELAY_ALLOW_HOST_PROD_BIND")
        .env_remove("WAVRY_ALLOW_INSECURE_RELAY")
        .env("RUST_LOG", "off")
        .envs(envs.iter().copied())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let end = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(!status.success(), "wavry-relay {args:?} started");
            let mut err = String::new();
            std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
            return err;
        }
        if Instant::now() > end {
            let _ = child.kill();
            panic!("wavry-relay {args:?} did not refuse to start");
        }
        // Poll interval of a bounded wait for the process to exit.
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn safety_gates_and_the_advertised_address() {
    let key = "11".repeat(32);
    let base = [
        "--master-public-key",
        key.as_str(),
        "--health-listen",
        "127.0.0.1:0",
        "--master-url",
        "http://127.0.0.1:9",
    ];
    let with = |extra: &[&'static str]| -> Vec<String> {
        base.iter().chain(extra).map(ToString::to_string).collect()
    };
    let args = with(&["--listen", "0.0.0.0:0"]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    assert!(refused(&args, &[]).contains("WAVRY_RELAY_ALLOW_PUBLIC_BIND"));
    // Outside a container the host-prod gate applies too (inside one, the next check does).
    let in_container = Path::new("/.dockerenv").exists()
        || Path::new("/run/.containerenv").exists()
        || std::env::var_os("container").is_some();
    let err = refused(&args, &[("WAVRY_RELAY_ALLOW_PUBLIC_BIND", "1")]);
    if in_container {
        assert!(err.contains("--public-addr"), "{err}");
    } else {
        assert!(err.contains("WAVRY_RELAY_ALLOW_HOST_PROD_BIND"), "{err}");
    }
    // Fault 5: listening on an unspecified address without --public-addr is refused rather
    // than advertising 0.0.0.0 to peers.
    let err = refused(
        &args,
        &[
            ("WAVRY_RELAY_ALLOW_PUBLIC_BIND", "1"),
            ("WAVRY_RELAY_ALLOW_HOST_PROD_BIND", "1"),
        ],
    );
    assert!(err.contains("--public-addr"), "{err}");
    let args = with(&["--listen", "127.0.0.1:0", "--allow-insecure-dev"]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    assert!(refused(&args, &[]).contains("WAVRY_ALLOW_INSECURE_RELAY"));
}
