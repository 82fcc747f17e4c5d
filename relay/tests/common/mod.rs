//! Helpers shared by the relay's end-to-end tests: spawning the real `wavry-master` and
//! `wavry-relay` binaries, leases from the master, hand-made UDP peers, metrics.
#![allow(dead_code, clippy::unwrap_used)]

use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use time::OffsetDateTime;
use uuid::Uuid;
use wavry_control_testkit::{Service, free_port, sibling_binary};
use wavry_relay::peer::{Answer, decode_answer, encode_forward, encode_present};
use wavry_rift::identity::IdentityKey;
use wavry_rift::lease::{LeaseClaims, LeaseRole, LeaseSigner};
use wavry_rift::wire::PeerRole;

pub(crate) const RELAY_TOKEN: &str = "relay-bearer-token-for-relay-e2e";
pub(crate) const SERVICE: &str = "service-token-for-relay-e2e-0123456789";

pub(crate) fn relay_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_wavry-relay"))
}

pub(crate) fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub(crate) fn unix_ms() -> u64 {
    u64::try_from(OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000).unwrap()
}

pub(crate) struct Peer {
    pub(crate) sock: UdpSocket,
    pub(crate) key: IdentityKey,
}

impl Peer {
    pub(crate) fn new(seed: u8) -> Self {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        Self {
            sock,
            key: IdentityKey::from_seed([seed; 32]).unwrap(),
        }
    }

    pub(crate) fn id(&self) -> String {
        self.key.id().to_string()
    }

    /// Presents until an answer arrives (bounded retries: UDP).
    pub(crate) fn present(
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

    pub(crate) fn forward(&self, relay: SocketAddr, sid: [u8; 16], payload: &[u8]) -> Vec<u8> {
        let mut buf = vec![0u8; 20 + payload.len()];
        let n = encode_forward(&mut buf, sid, payload).unwrap();
        self.sock.send_to(&buf[..n], relay).unwrap();
        buf
    }

    pub(crate) fn recv(&self) -> Option<Vec<u8>> {
        let mut rx = [0u8; 2048];
        self.sock.recv(&mut rx).ok().map(|n| rx[..n].to_vec())
    }
}

pub(crate) struct Master {
    pub(crate) svc: Service,
    pub(crate) http: reqwest::Client,
    pub(crate) signer: LeaseSigner,
}

impl Master {
    pub(crate) async fn post(&self, path: &str, body: Value, bearer: &str) -> (u16, Value) {
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

    pub(crate) async fn lease(&self, client: &Peer, server: &Peer, exclude: &str) -> Value {
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
    pub(crate) fn forge_like_master(
        &self,
        holder: &Peer,
        sid: Uuid,
        rid: &str,
        exp_offset_s: i64,
    ) -> String {
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

pub(crate) async fn spawn_master(dir: &Path) -> Master {
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

pub(crate) struct Relay {
    pub(crate) svc: Service,
    pub(crate) udp: SocketAddr,
    pub(crate) id: String,
}

pub(crate) async fn spawn_relay(
    master: &Master,
    dir: &Path,
    udp_port: u16,
    extra: &[&str],
) -> Relay {
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

pub(crate) fn sid_of(g: &Value) -> ([u8; 16], Uuid) {
    let u: Uuid = g["session_id"].as_str().unwrap().parse().unwrap();
    (*u.as_bytes(), u)
}

pub(crate) async fn metrics(relay: &Relay) -> String {
    reqwest::get(format!("{}/metrics", relay.svc.base))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

pub(crate) fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with('{'))
        .and_then(|l| l.rsplit(' ').next())
        .map_or_else(|| panic!("{name} missing"), |v| v.parse().unwrap())
}
