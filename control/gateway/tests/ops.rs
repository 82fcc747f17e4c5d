//! Operating `wavry-gateway` as a real process: `/metrics` (and the older
//! `/metrics/prometheus`) is OpenMetrics text that follows the shared conventions
//! (control/README.md, "Metrics"), keeps the STUN counters and counts a login; `--probe`, the
//! container health check, exits 0 for a running gateway (also when the listen address comes
//! from the environment as `0.0.0.0`) and 1 with one line on stderr where nothing listens.

#![allow(clippy::unwrap_used)]

use std::{path::Path, time::Duration};

use serde_json::{Value, json};
use wavry_control_testkit::{
    Service, TempDir, assert_probe, free_port,
    openmetrics::{self, Exposition},
};
use wavry_rift::identity::IdentityKey;

const PASSWORD: &str = "correct horse battery staple";

fn gateway_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_wavry-gateway"))
}

/// A gateway on a free loopback port (no master needed).
async fn gateway() -> (Service, TempDir) {
    let dir = TempDir::new("gw-ops").unwrap();
    let port = free_port().unwrap();
    let args = vec![
        "--listen".to_string(),
        format!("127.0.0.1:{port}"),
        "--data-dir".into(),
        dir.path().display().to_string(),
        "--master-url".into(),
        format!("http://127.0.0.1:{}", free_port().unwrap()),
    ];
    let svc = Service::spawn(gateway_bin(), port, &args, &[], Duration::from_secs(30))
        .await
        .expect("gateway starts");
    (svc, dir)
}

async fn scrape(svc: &Service, path: &str) -> Exposition {
    let r = reqwest::get(format!("{}{path}", svc.base)).await.unwrap();
    assert_eq!(r.status(), 200, "{path}");
    let ct = r.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(ct.starts_with("application/openmetrics-text"), "{ct}");
    let text = r.text().await.unwrap();
    let e = openmetrics::parse(&text).unwrap_or_else(|err| panic!("{path}: {err:#}\n{text}"));
    e.check_conventions("wavry_gateway_", &[])
        .unwrap_or_else(|err| panic!("{path}: {err:#}\n{text}"));
    e
}

async fn post(http: &reqwest::Client, svc: &Service, path: &str, body: Value) -> (u16, Value) {
    let r = http
        .post(format!("{}{path}", svc.base))
        .json(&body)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_keep_every_family_and_count_a_login() {
    let (svc, _dir) = gateway().await;
    let before = scrape(&svc, "/metrics").await;
    assert_eq!(
        before
            .families
            .iter()
            .map(|f| (f.name.clone(), f.kind.clone()))
            .collect::<Vec<_>>(),
        scrape(&svc, "/metrics/prometheus")
            .await
            .families
            .iter()
            .map(|f| (f.name.clone(), f.kind.clone()))
            .collect::<Vec<_>>(),
        "both routes serve the same registry"
    );
    for (name, kind) in [
        ("wavry_gateway_websocket_connections", "gauge"),
        ("wavry_gateway_relay_sessions", "counter"),
        ("wavry_gateway_stun_answered", "counter"),
        ("wavry_gateway_stun_ignored", "counter"),
        ("wavry_gateway_stun_rate_limited", "counter"),
        ("wavry_gateway_auth_login_attempts", "counter"),
        ("wavry_gateway_auth_login_success", "counter"),
        ("wavry_gateway_auth_hasher_busy", "counter"),
    ] {
        assert_eq!(
            before.family(name).map(|f| f.kind.as_str()),
            Some(kind),
            "{name}"
        );
    }
    // 1 gauge, relay sessions, 3 STUN and 15 auth counters.
    assert_eq!(before.families.len(), 20, "{before:?}");

    // Register (proving the key), then log in once.
    let http = reqwest::Client::new();
    let key = IdentityKey::generate().unwrap();
    let pk = key.id().to_string();
    let (code, ch) = post(
        &http,
        &svc,
        "/auth/register/challenge",
        json!({"public_key": pk}),
    )
    .await;
    assert_eq!(code, 200, "{ch}");
    let sig = hex::encode(key.sign(ch["message"].as_str().unwrap().as_bytes()));
    let (code, body) = post(
        &http,
        &svc,
        "/auth/register",
        json!({"email": "ops@example.com", "password": PASSWORD, "display_name": "ops", "username": "ops", "public_key": pk, "challenge": ch["challenge"], "signature": sig}),
    )
    .await;
    assert_eq!(code, 201, "{body}");
    let (code, body) = post(
        &http,
        &svc,
        "/auth/login",
        json!({"email": "ops@example.com", "password": PASSWORD}),
    )
    .await;
    assert_eq!(code, 200, "{body}");

    let after = scrape(&svc, "/metrics").await;
    for name in [
        "wavry_gateway_auth_register_success_total",
        "wavry_gateway_auth_login_attempts_total",
        "wavry_gateway_auth_login_success_total",
    ] {
        assert_eq!(
            after.count(name, &[]).unwrap(),
            before.count(name, &[]).unwrap() + 1,
            "{name}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_answers_for_a_running_gateway_and_fails_where_nothing_listens() {
    let (svc, _dir) = gateway().await;
    assert_probe(
        gateway_bin(),
        "wavry-gateway",
        "--listen",
        "WAVRY_GATEWAY_BIND_ADDR",
        svc.port,
    )
    .await;
}
