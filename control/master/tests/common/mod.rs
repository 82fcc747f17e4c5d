//! Helpers shared by the master's real-process suites: spawn a master, HTTP and `/ws`
//! clients, identity registration and login.
#![allow(clippy::unwrap_used, dead_code)]

use std::{path::Path, time::Duration};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::{self, client::IntoClientRequest};
use wavry_control_testkit::{Service, free_port};
use wavry_rift::identity::IdentityKey;
use wavry_signal::{Envelope, Message};

pub(crate) const ADMIN: &str = "admin-panel-token-for-tests-0123456789";
pub(crate) const SERVICE: &str = "gateway-service-token-for-tests-0123456789";
pub(crate) const RELAY: &str = "relay-bearer-token-for-tests";
pub(crate) const ORIGIN: &str = "http://localhost:1420";

pub(crate) type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

pub(crate) struct Master {
    pub(crate) svc: Service,
    pub(crate) http: reqwest::Client,
}

pub(crate) async fn spawn(dir: &Path, db: Option<&String>) -> Master {
    spawn_with(dir, db, &[]).await
}

pub(crate) async fn spawn_with(
    dir: &Path,
    db: Option<&String>,
    extra_env: &[(&str, &str)],
) -> Master {
    spawn_full(dir, db, extra_env, &[]).await
}

/// A master with extra environment and extra command-line arguments.
pub(crate) async fn spawn_full(
    dir: &Path,
    db: Option<&String>,
    extra_env: &[(&str, &str)],
    extra_args: &[&str],
) -> Master {
    let port = free_port().unwrap();
    let mut args = vec![
        "--listen".to_string(),
        format!("127.0.0.1:{port}"),
        "--data-dir".into(),
        dir.display().to_string(),
    ];
    args.extend(extra_args.iter().map(|a| (*a).to_string()));
    if let Some(url) = db {
        args.extend(["--database-url".to_string(), url.clone()]);
    }
    let envs = vec![
        (
            "WAVRY_MASTER_RELAY_AUTH_TOKEN".to_string(),
            RELAY.to_string(),
        ),
        ("WAVRY_MASTER_SERVICE_TOKEN".into(), SERVICE.into()),
        ("ADMIN_PANEL_TOKEN".into(), ADMIN.into()),
    ];
    let envs: Vec<(String, String)> = envs
        .into_iter()
        .chain(
            extra_env
                .iter()
                .map(|(k, v)| ((*k).to_string(), (*v).to_string())),
        )
        .collect();
    let svc = Service::spawn(
        Path::new(env!("CARGO_BIN_EXE_wavry-master")),
        port,
        &args,
        &envs,
        Duration::from_secs(30),
    )
    .await
    .unwrap();
    Master {
        svc,
        http: reqwest::Client::new(),
    }
}

impl Master {
    pub(crate) async fn post(&self, path: &str, body: Value, bearer: Option<&str>) -> (u16, Value) {
        let mut rb = self
            .http
            .post(format!("{}{path}", self.svc.base))
            .json(&body);
        if let Some(b) = bearer {
            rb = rb.bearer_auth(b);
        }
        let r = rb.send().await.unwrap();
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }

    /// POSTs raw body bytes (JSON) with extra headers.
    pub(crate) async fn post_raw(
        &self,
        path: &str,
        body: Vec<u8>,
        headers: &[(&str, &str)],
    ) -> (u16, Value) {
        let mut rb = self
            .http
            .post(format!("{}{path}", self.svc.base))
            .header("content-type", "application/json")
            .body(body);
        for (k, v) in headers {
            rb = rb.header(*k, *v);
        }
        let r = rb.send().await.unwrap();
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }

    pub(crate) async fn get(&self, path: &str) -> (u16, Value) {
        let r = self
            .http
            .get(format!("{}{path}", self.svc.base))
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }

    pub(crate) async fn relay(&self, id: &str, endpoint: &str, region: &str, asn: u32) -> String {
        let (code, body) = self
            .post(
                "/v1/relays/register",
                json!({"relay_id": id, "endpoints": [endpoint], "region": region, "asn": asn}),
                Some(RELAY),
            )
            .await;
        assert_eq!(code, 200, "{body}");
        body["heartbeat_token"].as_str().unwrap().to_string()
    }

    /// Registers (challenge → signature) and returns a session token.
    pub(crate) async fn identity(&self, key: &IdentityKey, name: &str) -> String {
        let id = key.id().to_string();
        let (code, ch) = self
            .post(
                "/v1/auth/register",
                json!({"wavry_id": id, "display_name": name}),
                None,
            )
            .await;
        assert_eq!(code, 200, "{ch}");
        let sig = hex::encode(key.sign(ch["message"].as_str().unwrap().as_bytes()));
        let (code, body) = self
            .post(
                "/v1/auth/register/verify",
                json!({"wavry_id": id, "challenge_id": ch["challenge_id"], "signature_hex": sig}),
                None,
            )
            .await;
        assert_eq!(code, 201, "{body}");
        body["token"].as_str().unwrap().to_string()
    }

    pub(crate) async fn login(&self, key: &IdentityKey) -> (u16, Value) {
        let id = key.id().to_string();
        let (_, ch) = self
            .post("/v1/auth/login", json!({"wavry_id": id}), None)
            .await;
        let sig = hex::encode(key.sign(ch["message"].as_str().unwrap().as_bytes()));
        self.post(
            "/v1/auth/login",
            json!({"wavry_id": id, "challenge_id": ch["challenge_id"], "signature_hex": sig}),
            None,
        )
        .await
    }

    pub(crate) async fn ws(&self, token: &str) -> (Ws, Message) {
        let mut req = format!("ws://127.0.0.1:{}/ws", self.svc.port)
            .into_client_request()
            .unwrap();
        req.headers_mut().insert("origin", ORIGIN.parse().unwrap());
        let (mut ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
        send(
            &mut ws,
            &Message::Bind {
                token: token.into(),
            },
        )
        .await;
        let m = recv(&mut ws).await.unwrap();
        (ws, m)
    }

    pub(crate) async fn well_known(&self) -> ([u8; 32], String) {
        let (_, wk) = self.get("/.well-known/wavry-id").await;
        (
            hex::decode(wk["public_key"].as_str().unwrap())
                .unwrap()
                .try_into()
                .unwrap(),
            wk["key_id"].as_str().unwrap().into(),
        )
    }
}

pub(crate) async fn send(ws: &mut Ws, m: &Message) {
    ws.send(tungstenite::Message::Text(Envelope::encode(m).into()))
        .await
        .unwrap();
}

pub(crate) async fn recv(ws: &mut Ws) -> Option<Message> {
    loop {
        match tokio::time::timeout(Duration::from_secs(15), ws.next())
            .await
            .expect("message within 15 s")
        {
            Some(Ok(tungstenite::Message::Text(t))) => return Some(Envelope::decode(&t).unwrap()),
            Some(Ok(tungstenite::Message::Ping(_) | tungstenite::Message::Pong(_))) => {}
            _ => return None,
        }
    }
}

pub(crate) fn lease_request(
    requester: &str,
    target: &str,
    probes: &Value,
    exclude: &Value,
) -> Value {
    json!({"requester": {"sub": requester}, "target": {"sub": target}, "region": "eu-west", "probes": probes, "exclude": exclude})
}
