//! Control-plane security findings (issue 16), each proven against a real `wavry-master`
//! process over its HTTP and WebSocket APIs only, on SQLite and on Postgres.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use serde_json::{Value, json};
use wavry_control_testkit::{PgCluster, TempDir, verify_lease};
use wavry_rift::{identity::IdentityKey, lease::LeaseRole};
use wavry_signal::{Message, Role};

/// Every string in `v` that looks like a PASETO v4.public lease.
fn lease_tokens(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::String(s) if s.starts_with("v4.public.") => out.push(s.clone()),
        Value::Array(a) => a.iter().for_each(|x| lease_tokens(x, out)),
        Value::Object(o) => o.values().for_each(|x| lease_tokens(x, out)),
        _ => {}
    }
}

/// The `sub` of a lease that verifies for either role (panics when it verifies for none).
fn lease_sub(pk: [u8; 32], kid: &str, relay: &str, token: &str, sid: uuid::Uuid) -> String {
    [LeaseRole::Client, LeaseRole::Server]
        .into_iter()
        .find_map(|r| verify_lease(pk, kid, relay, token, sid, r).ok())
        .expect("a lease issued by this master")
        .sub
}

/// Finding 1 — the outside probe: an identity that is not the target cannot obtain or read the
/// target's lease, over HTTP (whatever the body names) or over `/ws`; the target receives its
/// own lease on its socket only.
async fn leases_only_for_yourself(db: Option<String>) {
    let dir = TempDir::new("master-probe").unwrap();
    let m = spawn(dir.path(), db.as_ref()).await;
    m.relay("r1", "127.0.0.1:4000", "eu-west", 1).await;
    let (host, mallory, absent) = (
        IdentityKey::generate().unwrap(),
        IdentityKey::generate().unwrap(),
        IdentityKey::generate().unwrap(),
    );
    let host_token = m.identity(&host, "Host").await;
    let mal_token = m.identity(&mallory, "Mallory").await;
    m.identity(&absent, "Absent").await;
    let (hid, mid, aid) = (
        host.id().to_string(),
        mallory.id().to_string(),
        absent.id().to_string(),
    );
    let (pk, kid) = m.well_known().await;
    let (mut host_ws, _) = m.ws(&host_token).await;
    let (mut mal_ws, _) = m.ws(&mal_token).await;

    // HTTP: the requester is always the caller; the target's lease never comes back.
    let bodies = [
        json!({"requester": {"sub": hid}, "target": {"sub": hid}}),
        json!({"requester": {"sub": hid, "wavry_id": hid}, "target": {"sub": hid, "wavry_id": hid}, "requester_role": "server"}),
        json!({"requester": {"sub": mid}, "target": {"sub": hid}}),
        json!({"requester": {"sub": "alice"}, "target": {"sub": "", "wavry_id": hid}}),
    ];
    for body in bodies {
        let (code, g) = m.post("/v1/leases", body.clone(), Some(&mal_token)).await;
        assert_eq!(code, 200, "{body} -> {g}");
        assert!(g.get("target").is_none(), "target lease returned: {g}");
        assert_eq!(g["requester"]["sub"], mid.as_str(), "{g}");
        let sid: uuid::Uuid = g["session_id"].as_str().unwrap().parse().unwrap();
        let relay = g["relay_id"].as_str().unwrap();
        let mut tokens = Vec::new();
        lease_tokens(&g, &mut tokens);
        assert_eq!(tokens.len(), 1, "{g}");
        assert_eq!(lease_sub(pk, &kid, relay, &tokens[0], sid), mid);
        // The target gets its own lease on its socket, naming the caller as its peer.
        let Some(Message::RelayCredentials {
            token,
            session_id,
            peer,
            relay_id,
            ..
        }) = recv(&mut host_ws).await
        else {
            panic!("target got no credentials")
        };
        assert_eq!((session_id, peer.as_str()), (sid, mid.as_str()));
        assert_eq!(lease_sub(pk, &kid, &relay_id, &token, sid), hid);
    }
    // Targets that are not a connected Wavry ID, disagreeing names, yourself, no session.
    for (body, want) in [
        (
            json!({"requester": {"sub": mid}, "target": {"sub": aid}}),
            404,
        ),
        (
            json!({"requester": {"sub": mid}, "target": {"sub": "bob"}}),
            400,
        ),
        (
            json!({"requester": {"sub": mid}, "target": {"sub": "bob", "wavry_id": hid}}),
            400,
        ),
        (
            json!({"requester": {"sub": hid}, "target": {"sub": mid}}),
            400,
        ),
    ] {
        let (code, g) = m.post("/v1/leases", body.clone(), Some(&mal_token)).await;
        assert_eq!(code, want, "{body} -> {g}");
        let mut tokens = Vec::new();
        lease_tokens(&g, &mut tokens);
        assert!(tokens.is_empty(), "{g}");
    }
    let anon = json!({"requester": {"sub": "a"}, "target": {"sub": hid}});
    assert_eq!(m.post("/v1/leases", anon, None).await.0, 401);

    // WebSocket: the requester's socket carries only its own lease.
    send(
        &mut mal_ws,
        &Message::RequestRelay {
            target: hid.clone(),
            region: None,
            role: Some(Role::Server),
            probes: vec![],
            exclude: vec![],
        },
    )
    .await;
    // A message with a known reply marks the end of what the request produced.
    send(
        &mut mal_ws,
        &Message::Candidate {
            target: aid.clone(),
            from: None,
            candidate: "end".into(),
        },
    )
    .await;
    let mut seen = Vec::new();
    loop {
        match recv(&mut mal_ws).await.unwrap() {
            Message::RelayCredentials {
                token,
                session_id,
                relay_id,
                ..
            } => seen.push(lease_sub(pk, &kid, &relay_id, &token, session_id)),
            Message::Error {
                code: Some(404), ..
            } => break,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(
        seen,
        std::slice::from_ref(&mid),
        "only the requester's own lease"
    );
    let Some(Message::RelayCredentials {
        token,
        session_id,
        relay_id,
        role,
        ..
    }) = recv(&mut host_ws).await
    else {
        panic!("target got no credentials over /ws")
    };
    assert_eq!(role, Role::Client);
    assert_eq!(lease_sub(pk, &kid, &relay_id, &token, session_id), hid);

    // The service token names gateway subjects only: not a master identity's Wavry ID.
    let svc = json!({"requester": {"sub": "gw-user"}, "target": {"sub": hid}});
    assert_eq!(m.post("/v1/leases", svc, Some(SERVICE)).await.0, 403);
    let svc = json!({"requester": {"sub": "gw-user"}, "target": {"sub": "gw-other"}});
    let (code, g) = m.post("/v1/leases", svc, Some(SERVICE)).await;
    assert_eq!(code, 200, "{g}");
    assert!(g["target"]["token"].is_string(), "the broker delivers both");
}

fn unix_now() -> i64 {
    i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs(),
    )
    .unwrap()
}

/// A v2 relay registration: the body and the hex signature over
/// `"wavry-relay-register-v2\n" ‖ body`.
fn signed_registration(
    key: &IdentityKey,
    relay_id: &str,
    endpoint: &str,
    nonce: &str,
) -> (Vec<u8>, String) {
    let body = serde_json::to_vec(&json!({
        "relay_id": relay_id,
        "endpoints": [endpoint],
        "wavry_id": key.id().to_string(),
        "timestamp": unix_now(),
        "nonce": nonce,
    }))
    .unwrap();
    let mut msg = b"wavry-relay-register-v2\n".to_vec();
    msg.extend_from_slice(&body);
    (body, hex::encode(key.sign(&msg)))
}

/// Finding 8a — a relay identity proof signs the whole request with a one-time nonce: a
/// captured registration cannot be replayed, nor its signature reused with other endpoints.
async fn relay_proofs_cannot_be_replayed(db: Option<String>) {
    let dir = TempDir::new("master-relay-v2").unwrap();
    let relay_key = IdentityKey::generate().unwrap();
    let allowed = relay_key.id().to_string();
    let m = spawn_with(
        dir.path(),
        db.as_ref(),
        &[("WAVRY_MASTER_RELAY_ALLOWED_IDS", allowed.as_str())],
    )
    .await;
    let (body, sig) = signed_registration(
        &relay_key,
        "rid-1",
        "127.0.0.1:4100",
        "nonce-0000000000000001",
    );
    let hdr = [("x-wavry-relay-signature", sig.as_str())];
    let (code, resp) = m.post_raw("/v1/relays/register", body.clone(), &hdr).await;
    assert_eq!(code, 200, "{resp}");
    let hb = resp["heartbeat_token"].as_str().unwrap().to_string();
    assert_eq!(
        m.post(
            "/v1/relays/heartbeat",
            json!({"relay_id": "rid-1", "load_pct": 3.0}),
            Some(&hb)
        )
        .await
        .0,
        200
    );
    let (code, resp) = m.post_raw("/v1/relays/register", body.clone(), &hdr).await;
    assert_eq!(code, 401, "replayed registration accepted: {resp}");
    let tampered = String::from_utf8(body)
        .unwrap()
        .replace("127.0.0.1:4100", "127.0.0.9:4100")
        .replace("nonce-0000000000000001", "nonce-0000000000000002");
    let (code, resp) = m
        .post_raw("/v1/relays/register", tampered.into_bytes(), &hdr)
        .await;
    assert_eq!(code, 401, "signature reused with other endpoints: {resp}");
    // The v1 proof (relay id and timestamp only) is refused.
    let ts = unix_now();
    let v1 = relay_key.sign(format!("wavry-relay-register-v1\nrid-1\n{ts}").as_bytes());
    let (code, _) = m
        .post(
            "/v1/relays/register",
            json!({"relay_id": "rid-1", "endpoints": ["127.0.0.1:4100"], "wavry_id": allowed, "timestamp": ts, "signature": hex::encode(v1)}),
            None,
        )
        .await;
    assert_eq!(code, 401);
    // Not allow-listed: refused; with the bearer, another identity cannot take the pinned id.
    let other = IdentityKey::generate().unwrap();
    let (body, sig) =
        signed_registration(&other, "rid-2", "127.0.0.1:4101", "nonce-0000000000000003");
    assert_eq!(
        m.post_raw(
            "/v1/relays/register",
            body,
            &[("x-wavry-relay-signature", &sig)]
        )
        .await
        .0,
        401
    );
    let (body, sig) =
        signed_registration(&other, "rid-1", "127.0.0.1:4101", "nonce-0000000000000004");
    assert_eq!(
        m.post_raw(
            "/v1/relays/register",
            body,
            &[
                ("x-wavry-relay-signature", &sig),
                ("authorization", &format!("Bearer {RELAY}"))
            ]
        )
        .await
        .0,
        403
    );
}

/// A master trusting `X-Forwarded-For` from loopback, with extra environment.
async fn proxied_master(dir: &TempDir, db: Option<&String>, env: &[(&str, &str)]) -> Master {
    spawn_full(dir.path(), db, env, &["--trust-proxy", "127.0.0.1"]).await
}

/// Step 1 of an identity login from client address `ip`.
async fn login_from(m: &Master, ip: &str, id: &str) -> (u16, Value) {
    let r = m
        .http
        .post(format!("{}/v1/auth/login", m.svc.base))
        .header("x-forwarded-for", ip)
        .json(&json!({"wavry_id": id}))
        .send()
        .await
        .unwrap();
    (
        r.status().as_u16(),
        r.json::<Value>().await.unwrap_or(Value::Null),
    )
}

/// Finding 8b — login challenges are keyed by a random id: another requester cannot displace
/// a pending one, and a full table evicts instead of answering 503.
async fn challenges_cannot_be_displaced(db: Option<String>) {
    let dir = TempDir::new("master-challenges").unwrap();
    let m = proxied_master(&dir, db.as_ref(), &[("WAVRY_MASTER_MAX_CHALLENGES", "8")]).await;
    let victim = IdentityKey::generate().unwrap();
    let vid = victim.id().to_string();
    m.identity(&victim, "Victim").await;
    let (code, ch) = login_from(&m, "192.0.2.1", &vid).await;
    assert_eq!(code, 200, "{ch}");
    // Someone else asks for a challenge for the victim's identity.
    assert_eq!(login_from(&m, "198.51.100.9", &vid).await.0, 200);
    let sig = hex::encode(victim.sign(ch["message"].as_str().unwrap().as_bytes()));
    let (code, body) = m
        .post(
            "/v1/auth/login",
            json!({"wavry_id": vid, "challenge_id": ch["challenge_id"], "signature_hex": sig}),
            None,
        )
        .await;
    assert_eq!(code, 200, "pending challenge displaced: {body}");
    // A flood of challenges (more than the table holds) from many addresses: never 503.
    for i in 0..12 {
        let other = IdentityKey::generate().unwrap().id().to_string();
        let (code, body) = login_from(&m, &format!("203.0.113.{i}"), &other).await;
        assert_eq!(code, 200, "challenge {i}: {body}");
    }
}

/// Finding 2 (master) — the auth limiter evicts instead of refusing newcomers when its
/// table is full, and keys IPv6 clients by /64.
async fn limiters_evict_and_key_ipv6_by_block(db: Option<String>) {
    let dir = TempDir::new("master-limiters").unwrap();
    let m = proxied_master(
        &dir,
        db.as_ref(),
        &[("WAVRY_MASTER_AUTH_RATE_LIMIT_MAX_KEYS", "4")],
    )
    .await;
    let id = IdentityKey::generate().unwrap().id().to_string();
    for i in 0..12 {
        let (code, body) = login_from(&m, &format!("203.0.113.{i}"), &id).await;
        assert_eq!(code, 200, "newcomer {i} refused by a full table: {body}");
    }
    // One IPv6 /64 is one client: its 31st request in a minute is limited (30 per minute).
    let mut codes = Vec::new();
    for i in 0..31 {
        codes.push(
            login_from(&m, &format!("2001:db8:1:2::{:x}", i + 1), &id)
                .await
                .0,
        );
    }
    assert_eq!(codes[..30], [200; 30]);
    assert_eq!(codes[30], 429, "IPv6 clients must be limited per /64");
    assert_eq!(
        login_from(&m, "2001:db8:1:3::1", &id).await.0,
        200,
        "another /64 is another client"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_leases_only_for_yourself() {
    leases_only_for_yourself(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_relay_proofs_cannot_be_replayed() {
    relay_proofs_cannot_be_replayed(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_challenges_cannot_be_displaced() {
    challenges_cannot_be_displaced(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_limiters_evict_and_key_ipv6_by_block() {
    limiters_evict_and_key_ipv6_by_block(None).await;
}

/// Fails — never skips — when the Postgres binaries are missing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_security() {
    let pg = PgCluster::start().unwrap_or_else(|e| panic!("{e:#}\nThe Postgres suite needs the Debian `postgresql` package: run `cargo xtask test`."));
    for name in ["probe", "relayv2", "challenges", "limiters"] {
        pg.create_db(name).unwrap();
    }
    leases_only_for_yourself(Some(pg.url("probe"))).await;
    relay_proofs_cannot_be_replayed(Some(pg.url("relayv2"))).await;
    challenges_cannot_be_displaced(Some(pg.url("challenges"))).await;
    limiters_evict_and_key_ipv6_by_block(Some(pg.url("limiters"))).await;
}
