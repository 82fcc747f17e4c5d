//! Operating `wavry-master` as a real process: `/metrics` is OpenMetrics text that follows the
//! shared conventions (control/README.md, "Metrics") and counts what happened; `--probe`, the
//! container health check, exits 0 for a running master (also when the listen address comes
//! from the environment as `0.0.0.0`) and 1 with one line on stderr where nothing listens.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;

use common::*;
use wavry_control_testkit::{
    TempDir, assert_probe,
    openmetrics::{self, Exposition},
};
use wavry_rift::identity::IdentityKey;

fn master_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_wavry-master"))
}

async fn scrape(m: &Master) -> Exposition {
    let r = m
        .http
        .get(format!("{}/metrics", m.svc.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let ct = r.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(ct.starts_with("application/openmetrics-text"), "{ct}");
    let text = r.text().await.unwrap();
    let e = openmetrics::parse(&text).unwrap_or_else(|err| panic!("{err:#}\n{text}"));
    e.check_conventions("wavry_master_", &[])
        .unwrap_or_else(|err| panic!("{err:#}\n{text}"));
    e
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_registrations_logins_and_relays() {
    let dir = TempDir::new("master-ops").unwrap();
    let m = spawn(dir.path(), None).await;
    let before = scrape(&m).await;
    for name in [
        "wavry_master_auth_register_success_total",
        "wavry_master_auth_login_attempts_total",
        "wavry_master_auth_login_success_total",
        "wavry_master_lease_grants_total",
        "wavry_master_lease_refusals_total",
        "wavry_master_relay_registrations_total",
        "wavry_master_relay_heartbeats_total",
        "wavry_master_rate_limited_total",
        "wavry_master_signalling_peers",
        "wavry_master_relays_registered",
        "wavry_master_relays_assignable",
    ] {
        assert_eq!(before.count(name, &[]), Some(0), "{name}");
    }
    assert!(before.value("wavry_master_uptime_seconds", &[]).is_some());

    let key = IdentityKey::generate().unwrap();
    m.identity(&key, "ops").await;
    let (code, body) = m.login(&key).await;
    assert_eq!(code, 200, "{body}");
    m.relay("r1", "127.0.0.1:4000", "eu-west", 1).await;
    let after = scrape(&m).await;
    for (name, want) in [
        ("wavry_master_auth_register_success_total", 1),
        ("wavry_master_auth_login_attempts_total", 1),
        ("wavry_master_auth_login_success_total", 1),
        ("wavry_master_relay_registrations_total", 1),
        ("wavry_master_relays_registered", 1),
    ] {
        assert_eq!(after.count(name, &[]), Some(want), "{name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_answers_for_a_running_master_and_fails_where_nothing_listens() {
    let dir = TempDir::new("master-probe").unwrap();
    let m = spawn(dir.path(), None).await;
    assert_probe(
        master_bin(),
        "wavry-master",
        "--listen",
        "WAVRY_MASTER_LISTEN",
        m.svc.port,
    )
    .await;
}
