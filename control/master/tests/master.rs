//! `wavry-master` as a real process: relay registry and authentication, ranked selection,
//! lease issuance for both roles, Ed25519 identity accounts, the authenticated `/ws`,
//! revocation, signed feedback, and restart persistence — on SQLite and on Postgres.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::*;
use serde_json::{Value, json};
use wavry_control_testkit::{PgCluster, TempDir, verify_lease};
use wavry_rift::{identity::IdentityKey, lease::LeaseRole};
use wavry_signal::{Message, RelayProbe, Role};

/// Relay registry, authentication, state machine and ranked selection.
async fn registry_and_selection(db: Option<String>) {
    let dir = TempDir::new("master-reg").unwrap();
    let m = spawn(dir.path(), db.as_ref()).await;
    assert_eq!(m.get("/ready").await.0, 503);
    // Authentication and validation.
    let reg = json!({"relay_id": "r1", "endpoints": ["127.0.0.1:4000"]});
    assert_eq!(
        m.post("/v1/relays/register", reg.clone(), None).await.0,
        401
    );
    assert_eq!(
        m.post("/v1/relays/register", reg.clone(), Some("wrong"))
            .await
            .0,
        401
    );
    assert_eq!(
        m.post(
            "/v1/relays/register",
            json!({"relay_id": "r1", "endpoints": ["0.0.0.0:4000"]}),
            Some(RELAY)
        )
        .await
        .0,
        400
    );
    assert_eq!(
        m.post(
            "/v1/relays/register",
            json!({"relay_id": "r1", "endpoints": ["127.0.0.1:4000"], "max_bitrate_kbps": 5000}),
            Some(RELAY)
        )
        .await
        .0,
        400
    );
    let hb1 = m.relay("near", "127.0.0.1:4001", "eu-west", 1).await;
    m.relay("far", "127.0.0.2:4002", "us-east", 2).await;
    m.relay("busy", "127.0.0.3:4003", "eu-west", 3).await;
    let (code, ready) = m.get("/ready").await;
    assert_eq!(code, 200, "{ready}");
    // Heartbeats: the per-relay token works, a wrong one does not; 3 beats → Active.
    assert_eq!(
        m.post(
            "/v1/relays/heartbeat",
            json!({"relay_id": "near", "load_pct": 10.0}),
            Some("nope")
        )
        .await
        .0,
        401
    );
    for _ in 0..3 {
        assert_eq!(
            m.post(
                "/v1/relays/heartbeat",
                json!({"relay_id": "near", "load_pct": 10.0}),
                Some(&hb1)
            )
            .await
            .0,
            200
        );
    }
    assert_eq!(
        m.post(
            "/v1/relays/heartbeat",
            json!({"relay_id": "busy", "load_pct": 99.0}),
            Some(RELAY)
        )
        .await
        .0,
        200
    );
    assert_eq!(
        m.post(
            "/v1/relays/heartbeat",
            json!({"relay_id": "ghost", "load_pct": 1.0}),
            Some(RELAY)
        )
        .await
        .0,
        404
    );
    assert_eq!(
        m.post(
            "/v1/relays/heartbeat",
            json!({"relay_id": "near", "load_pct": 101.0}),
            Some(RELAY)
        )
        .await
        .0,
        400
    );
    let (_, list) = m.get("/v1/relays").await;
    let state = |id: &str| {
        list.as_array()
            .unwrap()
            .iter()
            .find(|r| r["relay_id"] == id)
            .unwrap()["state"]
            .clone()
    };
    assert_eq!(
        (state("near"), state("busy"), state("far")),
        (json!("Active"), json!("Degraded"), json!("New"))
    );

    // Ranking: region and load first; client probes override; exclusion gives failover.
    let (code, g) = m
        .post(
            "/v1/leases",
            lease_request("alice", "bob", &json!([]), &json!([])),
            Some(SERVICE),
        )
        .await;
    assert_eq!(code, 200, "{g}");
    let ranked: Vec<&str> = g["ranked"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["relay_id"].as_str().unwrap())
        .collect();
    assert_eq!(ranked, ["near", "far", "busy"], "{g}");
    let probes = json!([{"relay_id": "far", "rtt_ms": 4.0, "loss_pct": 0.0}, {"relay_id": "near", "rtt_ms": 290.0, "loss_pct": 8.0}]);
    let (_, g) = m
        .post(
            "/v1/leases",
            lease_request("alice", "bob", &probes, &json!([])),
            Some(SERVICE),
        )
        .await;
    assert_eq!(g["relay_id"], "far", "{g}");
    let (_, g) = m
        .post(
            "/v1/leases",
            lease_request("carol", "bob", &json!([]), &json!(["near"])),
            Some(SERVICE),
        )
        .await;
    assert_eq!(g["relay_id"], "far");
    // Each peer's lease is for its own role; the requester may ask to be the server.
    let (pk, kid) = m.well_known().await;
    let sid: uuid::Uuid = g["session_id"].as_str().unwrap().parse().unwrap();
    verify_lease(
        pk,
        &kid,
        "far",
        g["requester"]["token"].as_str().unwrap(),
        sid,
        LeaseRole::Client,
    )
    .unwrap();
    verify_lease(
        pk,
        &kid,
        "far",
        g["target"]["token"].as_str().unwrap(),
        sid,
        LeaseRole::Server,
    )
    .unwrap();
    let mut req = lease_request("dave", "bob", &json!([]), &json!([]));
    req["requester_role"] = json!("server");
    let (_, g2) = m.post("/v1/leases", req, Some(SERVICE)).await;
    assert_eq!(
        (
            g2["requester"]["role"].as_str(),
            g2["target"]["role"].as_str()
        ),
        (Some("server"), Some("client"))
    );
    // Draining relays are not chosen.
    assert_eq!(
        m.post(
            "/admin/api/relays/update_state",
            json!({"relay_id": "near", "new_state": "Draining"}),
            Some(ADMIN)
        )
        .await
        .0,
        200
    );
    let (_, g3) = m
        .post(
            "/v1/leases",
            lease_request("erin", "bob", &json!([]), &json!([])),
            Some(SERVICE),
        )
        .await;
    assert!(
        g3["ranked"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["relay_id"] != "near"),
        "{g3}"
    );
    // Per-requester lease limit (10 per minute by default).
    let mut last = 0;
    for _ in 0..11 {
        last = m
            .post(
                "/v1/leases",
                lease_request("frank", "bob", &json!([]), &json!([])),
                Some(SERVICE),
            )
            .await
            .0;
    }
    assert_eq!(last, 429);
    // Feedback needs the service token naming a participant (or a participant's signature).
    let fb = json!({"session_id": sid, "relay_id": "far", "quality_score": 90, "issues": [], "reporter": "mallory"});
    assert_eq!(m.post("/v1/feedback", fb.clone(), None).await.0, 401);
    assert_eq!(m.post("/v1/feedback", fb, Some(SERVICE)).await.0, 403);
    let fb = json!({"session_id": sid, "relay_id": "far", "quality_score": 90, "issues": [], "reporter": "carol"});
    assert_eq!(
        m.post("/v1/feedback", fb.clone(), Some(SERVICE)).await.0,
        200
    );
    assert_eq!(m.post("/v1/feedback", fb, Some(SERVICE)).await.0, 409);
}

/// Identity accounts, the authenticated `/ws`, relay credentials over the socket, signed
/// feedback, revocation, and restart persistence of identities and the signing key.
async fn identities_ws_and_restart(db: Option<String>) {
    let dir = TempDir::new("master-id").unwrap();
    let mut m = spawn(dir.path(), db.as_ref()).await;
    m.relay("r1", "127.0.0.1:4000", "eu-west", 1).await;
    let (host, client) = (
        IdentityKey::generate().unwrap(),
        IdentityKey::generate().unwrap(),
    );
    let host_token = m.identity(&host, "Host").await;
    let client_token = m.identity(&client, "Client").await;
    // Duplicate registration and bad signatures are refused.
    assert_eq!(
        m.post(
            "/v1/auth/register",
            json!({"wavry_id": host.id().to_string(), "display_name": "x"}),
            None
        )
        .await
        .0,
        409
    );
    let (_, ch) = m
        .post(
            "/v1/auth/login",
            json!({"wavry_id": host.id().to_string()}),
            None,
        )
        .await;
    let forged = hex::encode(client.sign(ch["message"].as_str().unwrap().as_bytes()));
    assert_eq!(
        m.post(
            "/v1/auth/login",
            json!({"wavry_id": host.id().to_string(), "challenge_id": ch["challenge_id"], "signature_hex": forged}),
            None
        )
        .await
        .0,
        401
    );

    let (mut host_ws, bound) = m.ws(&host_token).await;
    assert_eq!(
        bound,
        Message::Bound {
            username: host.id().to_string(),
            wavry_id: Some(host.id().to_string())
        }
    );
    let (mut client_ws, _) = m.ws(&client_token).await;
    send(
        &mut client_ws,
        &Message::RequestRelay {
            target: host.id().to_string(),
            region: None,
            role: None,
            probes: vec![RelayProbe {
                relay_id: "r1".into(),
                rtt_ms: 10.0,
                loss_pct: 0.0,
            }],
            exclude: vec![],
        },
    )
    .await;
    let (pk, kid) = m.well_known().await;
    let mut sid = None;
    for (ws, role, lr, holder) in [
        (&mut client_ws, Role::Client, LeaseRole::Client, &client),
        (&mut host_ws, Role::Server, LeaseRole::Server, &host),
    ] {
        let Some(Message::RelayCredentials {
            relay_id,
            token,
            session_id,
            role: got,
            ..
        }) = recv(ws).await
        else {
            panic!("no credentials")
        };
        assert_eq!(got, role);
        let claims = verify_lease(pk, &kid, &relay_id, &token, session_id, lr).unwrap();
        assert_eq!(claims.sub, holder.id().to_string());
        sid = Some(session_id);
    }
    let sid = sid.unwrap();
    // Signed feedback from a participant.
    let msg = format!("wavry-feedback-v1\n{sid}\nr1\n80");
    let fb = json!({"session_id": sid, "relay_id": "r1", "quality_score": 80, "issues": [], "signature": hex::encode(IdentityKey::generate().unwrap().sign(msg.as_bytes()))});
    assert_eq!(
        m.post("/v1/feedback", fb, None).await.0,
        401,
        "a non-participant's signature is refused"
    );
    let fb = json!({"session_id": sid, "relay_id": "r1", "quality_score": 80, "issues": [], "signature": hex::encode(client.sign(msg.as_bytes()))});
    assert_eq!(m.post("/v1/feedback", fb, None).await.0, 200);

    // Forwarding between identities.
    send(
        &mut client_ws,
        &Message::Candidate {
            target: host.id().to_string(),
            from: None,
            candidate: "cand".into(),
        },
    )
    .await;
    assert_eq!(
        recv(&mut host_ws).await.unwrap(),
        Message::Candidate {
            target: host.id().to_string(),
            from: Some(client.id().to_string()),
            candidate: "cand".into()
        }
    );

    // Revocation cuts the socket, refuses login and leases for that identity.
    assert_eq!(
        m.post(
            "/admin/api/sessions/revoke",
            json!({"wavry_id": host.id().to_string()}),
            Some("wrong-admin-token-wrong-admin-token")
        )
        .await
        .0,
        401
    );
    let (code, body) = m
        .post(
            "/admin/api/sessions/revoke",
            json!({"wavry_id": host.id().to_string(), "reason": "abuse"}),
            Some(ADMIN),
        )
        .await;
    assert_eq!(
        (code, body["connections_closed"].as_u64()),
        (200, Some(1)),
        "{body}"
    );
    assert!(matches!(
        recv(&mut host_ws).await,
        Some(Message::Error { .. })
    ));
    assert!(recv(&mut host_ws).await.is_none());
    assert_eq!(m.login(&host).await.0, 403);
    let req = json!({"requester": {"sub": "x"}, "target": {"sub": host.id().to_string()}});
    assert_eq!(m.post("/v1/leases", req, Some(&client_token)).await.0, 403);
    drop(client_ws);

    // Restart: same signing key id, identities and revocations kept.
    let key_id = kid.clone();
    m.svc.stop().await.unwrap();
    m = spawn(dir.path(), db.as_ref()).await;
    assert_eq!(m.well_known().await.1, key_id, "signing key persisted");
    let (code, body) = m.login(&client).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(m.login(&host).await.0, 403, "revocation persisted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_registry_and_selection() {
    registry_and_selection(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_identities_ws_and_restart() {
    identities_ws_and_restart(None).await;
}

/// Polls `path` on a master until `ok(status, body)` holds (bounded).
async fn wait_until(m: &Master, path: &str, ok: impl Fn(u16, &Value) -> bool) {
    let end = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (code, body) = m.get(path).await;
        if ok(code, &body) {
            return;
        }
        assert!(
            std::time::Instant::now() < end,
            "{path} never satisfied the condition: {code} {body}"
        );
        // Poll interval of a bounded wait.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Two masters on one Postgres database with the same signing key: a relay registered with
/// A becomes assignable on B, heartbeats with A's per-relay token are accepted by B, and a
/// revocation made on A is enforced by B.
async fn two_masters_share_registry(url: &str) {
    let key = IdentityKey::generate().unwrap();
    let mut key_hex = hex::encode(key.seed());
    key_hex.push_str(&hex::encode(key.id().as_bytes()));
    let env = [
        ("WAVRY_MASTER_SIGNING_KEY", key_hex.as_str()),
        ("WAVRY_MASTER_REGISTRY_SYNC_MS", "100"),
        ("WAVRY_MASTER_SWEEP_SECS", "1"),
    ];
    let (da, db) = (
        TempDir::new("master-a").unwrap(),
        TempDir::new("master-b").unwrap(),
    );
    let url = url.to_string();
    let a = spawn_with(da.path(), Some(&url), &env).await;
    let b = spawn_with(db.path(), Some(&url), &env).await;
    assert_eq!(
        a.well_known().await,
        b.well_known().await,
        "shared signing key"
    );
    let hb = a
        .relay("shared-relay", "127.0.0.9:4000", "eu-west", 7)
        .await;
    wait_until(&b, "/ready", |code, _| code == 200).await;
    assert_eq!(
        b.post(
            "/v1/relays/heartbeat",
            json!({"relay_id": "shared-relay", "load_pct": 5.0}),
            Some(&hb)
        )
        .await
        .0,
        200
    );
    let (code, g) = b
        .post(
            "/v1/leases",
            lease_request("gina", "hank", &json!([]), &json!([])),
            Some(SERVICE),
        )
        .await;
    assert_eq!(
        (code, g["relay_id"].as_str()),
        (200, Some("shared-relay")),
        "{g}"
    );
    assert_eq!(
        a.post(
            "/admin/api/sessions/revoke",
            json!({"sub": "hank"}),
            Some(ADMIN)
        )
        .await
        .0,
        200
    );
    let end = std::time::Instant::now() + Duration::from_secs(20);
    for attempt in 0.. {
        let requester = format!("ivan{attempt}");
        let code = b
            .post(
                "/v1/leases",
                lease_request(&requester, "hank", &json!([]), &json!([])),
                Some(SERVICE),
            )
            .await
            .0;
        if code == 403 {
            break;
        }
        assert!(
            std::time::Instant::now() < end,
            "revocation on A not enforced by B"
        );
        // Poll interval of a bounded wait.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Fails — never skips — when the Postgres binaries are missing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_suite() {
    let pg = PgCluster::start().unwrap_or_else(|e| panic!("{e:#}\nThe Postgres suite needs the Debian `postgresql` package: run `cargo xtask test`."));
    pg.create_db("reg").unwrap();
    pg.create_db("ident").unwrap();
    registry_and_selection(Some(pg.url("reg"))).await;
    identities_ws_and_restart(Some(pg.url("ident"))).await;
    pg.create_db("shared").unwrap();
    two_masters_share_registry(&pg.url("shared")).await;
}
