//! End to end with real processes on loopback: `wavry-master` + `wavry-relay` (two steered
//! shards) + two UDP peers presenting real leases from the master. Byte-exact forwarding both
//! ways, every rejection reason, a stolen token without the holder's signature, NAT
//! rebinding, /metrics as Prometheus text, a restarted relay keeping its id, idle cleanup and
//! --max-sessions.
//!
//! Needs the master binary beside the relay's: `cargo test -p wavry-relay -p wavry-master`
//! (or `cargo build -p wavry-master` first).
#![allow(clippy::unwrap_used)]

use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use time::OffsetDateTime;
use uuid::Uuid;
use wavry_control_testkit::{Service, TempDir, free_port, sibling_binary};
use wavry_relay::peer::{Answer, decode_answer, encode_forward, encode_present};
use wavry_rift::identity::IdentityKey;
use wavry_rift::lease::{LeaseClaims, LeaseRole, LeaseSigner};
use wavry_rift::wire::{PeerRole, RejectReason};

const RELAY_TOKEN: &str = "relay-bearer-token-for-relay-e2e";
const SERVICE: &str = "service-token-for-relay-e2e-0123456789";

fn relay_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_wavry-relay"))
}

fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn unix_ms() -> u64 {
    u64::try_from(OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000).unwrap()
}

struct Peer {
    sock: UdpSocket,
    key: IdentityKey,
}

impl Peer {
    fn new(seed: u8) -> Self {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        Self {
            sock,
            key: IdentityKey::from_seed([seed; 32]).unwrap(),
        }
    }

    fn id(&self) -> String {
        self.key.id().to_string()
    }

    /// Presents until an answer arrives (bounded retries: UDP).
    fn present(
        &self,
        relay: SocketAddr,
        relay_id: &str,
        sid: [u8; 16],
        role: PeerRole,
        token: &str,
        signed: bool,
    ) -> Answer {
        let mut buf = vec![0u8; 20 + 3 + token.len() + 72];
        let mut rx = [0u8; 2048];
        for _ in 0..6 {
            let n = encode_present(
                &mut buf,
                false,
                sid,
                role,
                token,
                signed.then(|| (&self.key, relay_id, unix_ms())),
            )
            .unwrap();
            self.sock.send_to(&buf[..n], relay).unwrap();
            if let Ok((m, from)) = self.sock.recv_from(&mut rx) {
                assert_eq!(from, relay);
                let (got_sid, answer) = decode_answer(&rx[..m]).unwrap();
                assert_eq!(got_sid, sid);
                return answer;
            }
        }
        panic!("no answer from the relay");
    }

    fn forward(&self, relay: SocketAddr, sid: [u8; 16], payload: &[u8]) -> Vec<u8> {
        let mut buf = vec![0u8; 20 + payload.len()];
        let n = encode_forward(&mut buf, sid, payload).unwrap();
        self.sock.send_to(&buf[..n], relay).unwrap();
        buf
    }

    fn recv(&self) -> Option<Vec<u8>> {
        let mut rx = [0u8; 2048];
        self.sock.recv(&mut rx).ok().map(|n| rx[..n].to_vec())
    }
}

struct Master {
    svc: Service,
    http: reqwest::Client,
    signer: LeaseSigner,
}

impl Master {
    async fn post(&self, path: &str, body: Value, bearer: &str) -> (u16, Value) {
        let r = self
            .http
            .post(format!("{}{path}", self.svc.base))
            .bearer_auth(bearer)
            .json(&body)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }

    async fn lease(&self, client: &Peer, server: &Peer, exclude: &str) -> Value {
        let (code, g) = self
            .post(
                "/v1/leases",
                json!({
                    // The service token names gateway subjects (usernames) in `sub`; the
                    // holder's Wavry ID, which the relay checks bindings against, rides in
                    // `wavry_id`.
                    "requester": {"sub": "e2e-client", "wavry_id": client.id()},
                    "target": {"sub": "e2e-server", "wavry_id": server.id()},
                    "exclude": [exclude],
                }),
                SERVICE,
            )
            .await;
        assert_eq!(code, 200, "{g}");
        g
    }

    /// A lease the master's own key signs but with claims the master would never issue.
    fn forge_like_master(&self, holder: &Peer, sid: Uuid, rid: &str, exp_offset_s: i64) -> String {
        let now = OffsetDateTime::now_utc();
        let exp = now + time::Duration::seconds(exp_offset_s);
        self.signer
            .issue(&LeaseClaims {
                sub: holder.id(),
                wavry_id: Some(holder.id()),
                sid,
                role: LeaseRole::Client,
                rid: rid.into(),
                kid: Some(self.signer.key_id().to_owned()),
                jti: None,
                iat: exp - time::Duration::seconds(600),
                nbf: exp - time::Duration::seconds(600),
                exp,
                slimit: None,
                hlimit: None,
            })
            .unwrap()
    }
}

async fn spawn_master(dir: &Path) -> Master {
    let key = IdentityKey::from_seed([0x4D; 32]).unwrap();
    let mut key_hex = hex::encode(key.seed());
    key_hex.push_str(&hex::encode(key.id().as_bytes()));
    let port = free_port().unwrap();
    let svc = Service::spawn(
        &sibling_binary(relay_bin(), "wavry-master").unwrap(),
        port,
        &[
            "--listen".into(),
            format!("127.0.0.1:{port}"),
            "--data-dir".into(),
            dir.display().to_string(),
        ],
        &[
            ("WAVRY_MASTER_RELAY_AUTH_TOKEN".into(), RELAY_TOKEN.into()),
            ("WAVRY_MASTER_SERVICE_TOKEN".into(), SERVICE.into()),
            ("WAVRY_MASTER_SIGNING_KEY".into(), key_hex),
        ],
        Duration::from_secs(30),
    )
    .await
    .unwrap();
    Master {
        svc,
        http: reqwest::Client::new(),
        signer: LeaseSigner::new(&key, None).unwrap(),
    }
}

struct Relay {
    svc: Service,
    udp: SocketAddr,
    id: String,
}

async fn spawn_relay(master: &Master, dir: &Path, udp_port: u16, extra: &[&str]) -> Relay {
    let hp = free_port().unwrap();
    let mut args: Vec<String> = [
        "--listen",
        &format!("127.0.0.1:{udp_port}"),
        "--health-listen",
        &format!("127.0.0.1:{hp}"),
        "--master-url",
        &master.svc.base,
        "--master-token",
        RELAY_TOKEN,
        "--key",
        &dir.join("relay.key").display().to_string(),
        "--max-bitrate-kbps",
        "50000",
        "--reject-rate-per-ip",
        "100",
    ]
    .iter()
    .map(ToString::to_string)
    .collect();
    args.extend(extra.iter().map(ToString::to_string));
    let svc = Service::spawn(relay_bin(), hp, &args, &[], Duration::from_secs(30))
        .await
        .unwrap();
    let health: Value = reqwest::get(format!("{}/health", svc.base))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = health["relay_id"].as_str().unwrap().to_owned();
    // Bounded wait until the master lists it (registration is asynchronous).
    let end = Instant::now() + Duration::from_secs(20);
    loop {
        let ready = reqwest::get(format!("{}/ready", svc.base)).await.unwrap();
        if ready.status().is_success() {
            break;
        }
        assert!(Instant::now() < end, "relay never became ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Relay {
        svc,
        udp: SocketAddr::from(([127, 0, 0, 1], udp_port)),
        id,
    }
}

fn sid_of(g: &Value) -> ([u8; 16], Uuid) {
    let u: Uuid = g["session_id"].as_str().unwrap().parse().unwrap();
    (*u.as_bytes(), u)
}

async fn metrics(relay: &Relay) -> String {
    reqwest::get(format!("{}/metrics", relay.svc.base))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with('{'))
        .and_then(|l| l.rsplit(' ').next())
        .map_or_else(|| panic!("{name} missing"), |v| v.parse().unwrap())
}

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
