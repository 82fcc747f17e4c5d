//! End-to-end: real `wavry-master` and `wavry-gateway` processes on loopback, driven over HTTP
//! and WebSocket, on SQLite and on a throwaway Postgres cluster.
//!
//! The master binary is taken from the same target directory as the gateway binary; build
//! both with `cargo test -p wavry-master -p wavry-gateway` (or `cargo xtask test`).

#![allow(clippy::unwrap_used)]

use std::{
    path::Path,
    time::{Duration, Instant},
};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::{self, client::IntoClientRequest};
use totp_rs::{Algorithm, Secret, TOTP};
use wavry_control_testkit::{PgCluster, Service, TempDir, free_port, sibling_binary, verify_lease};
use wavry_rift::{identity::IdentityKey, lease::LeaseRole};
use wavry_signal::{Envelope, Message, Role};

const ADMIN: &str = "admin-panel-token-for-tests-0123456789";
const SERVICE: &str = "gateway-service-token-for-tests-0123456789";
const RELAY: &str = "relay-bearer-token-for-tests";
const ORIGIN: &str = "http://localhost:1420";
const PASSWORD: &str = "correct horse battery staple";
const STARTUP: Duration = Duration::from_secs(30);

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Where the two services keep their data.
enum Db<'a> {
    Sqlite,
    Postgres(&'a PgCluster, &'static str),
}

impl Db<'_> {
    fn urls(&self) -> (Option<String>, Option<String>) {
        match self {
            Self::Sqlite => (None, None),
            Self::Postgres(pg, tag) => {
                let (m, g) = (format!("master_{tag}"), format!("gateway_{tag}"));
                pg.create_db(&m).expect("createdb master");
                pg.create_db(&g).expect("createdb gateway");
                (Some(pg.url(&m)), Some(pg.url(&g)))
            }
        }
    }
}

struct Stack {
    dir: TempDir,
    master: Service,
    gateway: Service,
    gateway_db: Option<String>,
    http: reqwest::Client,
}

fn gateway_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_wavry-gateway"))
}

async fn start_gateway(dir: &Path, master_base: &str, db: Option<&String>) -> Service {
    let port = free_port().unwrap();
    let mut args = vec![
        "--listen".to_string(),
        format!("127.0.0.1:{port}"),
        "--data-dir".into(),
        dir.join("gateway").display().to_string(),
        "--master-url".into(),
        master_base.to_string(),
    ];
    if let Some(url) = db {
        args.extend(["--database-url".to_string(), url.clone()]);
    }
    let envs = vec![
        (
            "WAVRY_GATEWAY_MASTER_TOKEN".to_string(),
            SERVICE.to_string(),
        ),
        ("ADMIN_PANEL_TOKEN".into(), ADMIN.into()),
        ("WAVRY_WS_BIND_TIMEOUT_SECS".into(), "2".into()),
        ("WAVRY_HTTP_HEADER_TIMEOUT_SECS".into(), "2".into()),
    ];
    Service::spawn(gateway_bin(), port, &args, &envs, STARTUP)
        .await
        .expect("gateway starts")
}

async fn start(db: &Db<'_>) -> Stack {
    let dir = TempDir::new("e2e").unwrap();
    let (master_db, gateway_db) = db.urls();
    let master_bin = sibling_binary(gateway_bin(), "wavry-master").unwrap();
    let port = free_port().unwrap();
    let mut args = vec![
        "--listen".to_string(),
        format!("127.0.0.1:{port}"),
        "--data-dir".into(),
        dir.path().join("master").display().to_string(),
    ];
    if let Some(url) = &master_db {
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
    let master = Service::spawn(&master_bin, port, &args, &envs, STARTUP)
        .await
        .expect("master starts");
    let gateway = start_gateway(dir.path(), &master.base, gateway_db.as_ref()).await;
    Stack {
        dir,
        master,
        gateway,
        gateway_db,
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(20))
            .build()
            .unwrap(),
    }
}

impl Stack {
    async fn post(
        &self,
        base: &str,
        path: &str,
        body: Value,
        headers: &[(&str, &str)],
    ) -> (u16, Value) {
        let mut rb = self.http.post(format!("{base}{path}")).json(&body);
        for (k, v) in headers {
            rb = rb.header(*k, *v);
        }
        let r = rb.send().await.unwrap();
        let code = r.status().as_u16();
        (code, r.json().await.unwrap_or(Value::Null))
    }

    async fn gw(&self, path: &str, body: Value) -> (u16, Value) {
        self.post(&self.gateway.base, path, body, &[]).await
    }

    async fn get(&self, url: String, headers: &[(&str, &str)]) -> (u16, Value) {
        let mut rb = self.http.get(url);
        for (k, v) in headers {
            rb = rb.header(*k, *v);
        }
        let r = rb.send().await.unwrap();
        let code = r.status().as_u16();
        (code, r.json().await.unwrap_or(Value::Null))
    }

    async fn register_relay(&self, id: &str) {
        let (code, body) = self
            .post(
                &self.master.base,
                "/v1/relays/register",
                json!({"relay_id": id, "endpoints": ["127.0.0.1:4000"], "region": "eu-west"}),
                &[("authorization", &format!("Bearer {RELAY}"))],
            )
            .await;
        assert_eq!(code, 200, "{body}");
    }

    /// Registers an account; returns (user id, session token, identity key).
    async fn register(&self, name: &str) -> (String, String, IdentityKey) {
        let key = IdentityKey::generate().unwrap();
        let pk = hex::encode(key.id().as_bytes());
        let (code, ch) = self
            .gw("/auth/register/challenge", json!({"public_key": pk}))
            .await;
        assert_eq!(code, 200, "{ch}");
        let sig = hex::encode(key.sign(ch["message"].as_str().unwrap().as_bytes()));
        let (code, body) = self
            .gw(
                "/auth/register",
                json!({"email": format!("{name}@example.com"), "password": PASSWORD, "display_name": name, "username": name, "public_key": pk, "challenge": ch["challenge"], "signature": sig}),
            )
            .await;
        assert_eq!(code, 201, "{body}");
        assert_eq!(body["user"]["wavry_id"], key.id().to_string());
        assert!(body.to_string().find("password_hash").is_none());
        (
            body["user_id"].as_str().unwrap().into(),
            body["token"].as_str().unwrap().into(),
            key,
        )
    }

    async fn login(&self, name: &str, password: &str, code: Option<String>) -> (u16, Value) {
        self.gw("/auth/login", json!({"email": format!("{name}@example.com"), "password": password, "totp_code": code})).await
    }

    async fn ws(&self, origin: Option<&str>) -> Result<Ws, tungstenite::Error> {
        let mut req = format!("ws://127.0.0.1:{}/ws", self.gateway.port)
            .into_client_request()
            .unwrap();
        if let Some(o) = origin {
            req.headers_mut().insert("origin", o.parse().unwrap());
        }
        tokio_tungstenite::connect_async(req)
            .await
            .map(|(ws, _)| ws)
    }
}

async fn send(ws: &mut Ws, m: &Message) {
    ws.send(tungstenite::Message::Text(Envelope::encode(m).into()))
        .await
        .unwrap();
}

/// Next signalling message, or `None` when the server closed the socket.
async fn recv(ws: &mut Ws) -> Option<Message> {
    loop {
        let next = tokio::time::timeout(Duration::from_secs(15), ws.next())
            .await
            .expect("no message within 15 s");
        match next {
            Some(Ok(tungstenite::Message::Text(t))) => {
                return Some(Envelope::decode(&t).expect("valid envelope"));
            }
            Some(Ok(tungstenite::Message::Ping(_) | tungstenite::Message::Pong(_))) => {}
            _ => return None,
        }
    }
}

async fn bind(stack: &Stack, token: &str) -> (Ws, Message) {
    let mut ws = stack.ws(Some(ORIGIN)).await.expect("ws connect");
    send(
        &mut ws,
        &Message::Bind {
            token: token.into(),
        },
    )
    .await;
    let m = recv(&mut ws).await.expect("bound");
    (ws, m)
}

fn totp(secret: &str) -> TOTP {
    TOTP::new(
        Algorithm::SHA1,
        6,
        1,
        30,
        Secret::Encoded(secret.into()).to_bytes().unwrap(),
    )
    .unwrap()
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// register → login → 2FA → host binds → client requests a relay session → both leases
/// verified for their own role → signalling forwarded → relay report → ban cuts the live
/// socket → restart keeps accounts, bans and 2FA.
async fn full_flow(db: Db<'_>) {
    let mut s = start(&db).await;
    // Not ready until a relay is assignable.
    assert_eq!(s.get(format!("{}/ready", s.master.base), &[]).await.0, 503);
    s.register_relay("relay-a").await;
    let (code, ready) = s.get(format!("{}/ready", s.master.base), &[]).await;
    assert_eq!(code, 200, "{ready}");
    let (_, wk) = s
        .get(format!("{}/.well-known/wavry-id", s.master.base), &[])
        .await;
    let master_pk: [u8; 32] = hex::decode(wk["public_key"].as_str().unwrap())
        .unwrap()
        .try_into()
        .unwrap();
    let kid = wk["key_id"].as_str().unwrap().to_string();

    let (host_id, _host_reg_token, host_key) = s.register("host").await;
    let (_client_id, client_reg_token, client_key) = s.register("client").await;
    let (code, host_login) = s.login("host", PASSWORD, None).await;
    assert_eq!(code, 200, "{host_login}");
    let host_token = host_login["token"].as_str().unwrap().to_string();

    // 2FA for the client: setup (session) → enable (code) → login needs the code.
    let (code, setup) = s
        .post(
            &s.gateway.base,
            "/auth/2fa/setup",
            json!({}),
            &[("x-session-token", &client_reg_token)],
        )
        .await;
    assert_eq!(code, 200, "{setup}");
    let secret = setup["secret"].as_str().unwrap().to_string();
    let t = totp(&secret);
    let (code, enabled) = s
        .post(
            &s.gateway.base,
            "/auth/2fa/enable",
            json!({"secret": secret, "code": t.generate(unix_now()), "password": PASSWORD}),
            &[("x-session-token", &client_reg_token)],
        )
        .await;
    assert_eq!(code, 200, "{enabled}");
    assert_eq!(
        s.post(
            &s.gateway.base,
            "/auth/2fa/setup",
            json!({}),
            &[("x-session-token", &client_reg_token)]
        )
        .await
        .0,
        401,
        "old sessions revoked"
    );
    let (code, body) = s.login("client", PASSWORD, None).await;
    assert_eq!((code, body["error"].as_str()), (401, Some("2FA required")));
    assert_eq!(body["totp_required"], true);
    let (code, body) = s
        .login("client", PASSWORD, Some(t.generate(unix_now() - 3600)))
        .await;
    assert_eq!(
        (code, body["error"].as_str()),
        (401, Some("Invalid 2FA code"))
    );
    // The enable step is used up: the next step's code (within the ±1 skew) logs in.
    let (code, body) = s
        .login("client", PASSWORD, Some(t.generate(unix_now() + 30)))
        .await;
    assert_eq!(code, 200, "{body}");
    let client_token = body["token"].as_str().unwrap().to_string();

    // Host registers on /ws; client binds and asks for a relayed session by Wavry ID.
    let (mut host_ws, bound) = bind(&s, &host_token).await;
    assert_eq!(
        bound,
        Message::Bound {
            username: "host".into(),
            wavry_id: Some(host_key.id().to_string())
        }
    );
    let (mut client_ws, bound) = bind(&s, &client_token).await;
    assert!(matches!(bound, Message::Bound { ref username, .. } if username == "client"));
    send(
        &mut client_ws,
        &Message::RequestRelay {
            target: host_key.id().to_string(),
            region: Some("eu-west".into()),
            role: None,
            probes: vec![],
            exclude: vec![],
        },
    )
    .await;
    let mine = recv(&mut client_ws).await.unwrap();
    let theirs = recv(&mut host_ws).await.unwrap();
    let mut sessions = Vec::new();
    for (m, want_role, want_peer, holder) in [
        (mine, Role::Client, "host", "client"),
        (theirs, Role::Server, "client", "host"),
    ] {
        let Message::RelayCredentials {
            relay_id,
            token,
            addr,
            session_id,
            role,
            peer,
            alternates,
            ..
        } = m
        else {
            panic!("expected RELAY_CREDENTIALS, got {m:?}")
        };
        assert_eq!(
            (role, peer.as_str(), relay_id.as_str(), addr.as_str()),
            (want_role, want_peer, "relay-a", "127.0.0.1:4000")
        );
        assert_eq!(alternates[0].relay_id, "relay-a");
        let lease_role = if want_role == Role::Client {
            LeaseRole::Client
        } else {
            LeaseRole::Server
        };
        let claims = verify_lease(master_pk, &kid, &relay_id, &token, session_id, lease_role)
            .expect("lease verifies for its own role");
        assert_eq!(claims.sub, holder);
        let other = if lease_role == LeaseRole::Client {
            LeaseRole::Server
        } else {
            LeaseRole::Client
        };
        assert!(
            verify_lease(master_pk, &kid, &relay_id, &token, session_id, other).is_err(),
            "lease must not verify for the other role"
        );
        assert!(verify_lease(master_pk, &kid, "relay-b", &token, session_id, lease_role).is_err());
        assert!(
            verify_lease(
                master_pk,
                &kid,
                &relay_id,
                &token,
                uuid::Uuid::new_v4(),
                lease_role
            )
            .is_err()
        );
        sessions.push((session_id, relay_id));
    }
    assert_eq!(
        sessions[0], sessions[1],
        "same relay session for both peers"
    );
    let _ = client_key;

    // Signalling is forwarded with the sender filled in.
    send(
        &mut client_ws,
        &Message::OfferRift {
            target: "host".into(),
            from: Some("forged".into()),
            from_wavry_id: Some("forged".into()),
            hello_base64: "SGVsbG8=".into(),
        },
    )
    .await;
    assert_eq!(
        recv(&mut host_ws).await.unwrap(),
        Message::OfferRift {
            target: "host".into(),
            from: Some("client".into()),
            from_wavry_id: Some(client_key.id().to_string()),
            hello_base64: "SGVsbG8=".into()
        }
    );
    send(
        &mut client_ws,
        &Message::Candidate {
            target: "nobody".into(),
            from: None,
            candidate: "c".into(),
        },
    )
    .await;
    assert!(matches!(
        recv(&mut client_ws).await,
        Some(Message::Error {
            code: Some(404),
            ..
        })
    ));

    // Relay report → reputation.
    let (sid, rid) = sessions[0].clone();
    let report = json!({"session_token": client_token, "relay_id": rid, "session_id": sid, "success": true, "bytes_sent": 1000, "duration_secs": 5});
    assert_eq!(s.gw("/v1/relays/report", report.clone()).await.0, 200);
    assert_eq!(
        s.gw("/v1/relays/report", report).await.0,
        409,
        "one report per session and user"
    );
    let forged = json!({"session_token": host_token, "relay_id": rid, "session_id": uuid::Uuid::new_v4(), "success": false});
    assert_eq!(
        s.gw("/v1/relays/report", forged).await.0,
        404,
        "reports must name a brokered session"
    );
    let (_, rep) = s
        .get(format!("{}/v1/relays/reputation", s.gateway.base), &[])
        .await;
    assert_eq!(rep[0]["success_count"], 1, "{rep}");

    // Ban cuts the host's live socket and blocks login.
    let (code, ban) = s
        .post(
            &s.gateway.base,
            "/admin/api/ban",
            json!({"user_id": host_id, "reason": "abuse"}),
            &[("x-admin-token", ADMIN)],
        )
        .await;
    assert_eq!(code, 200, "{ban}");
    assert_eq!(ban["connections_closed"], 1);
    match recv(&mut host_ws).await {
        Some(Message::Error { message, .. }) => assert!(message.contains("suspended"), "{message}"),
        other => panic!("expected an ERROR before close, got {other:?}"),
    }
    assert!(recv(&mut host_ws).await.is_none(), "socket closed");
    let (code, body) = s.login("host", PASSWORD, None).await;
    assert_eq!(
        (code, body["error"].as_str()),
        (403, Some("Account suspended: abuse"))
    );
    let (_, overview) = s
        .get(
            format!("{}/admin/api/overview", s.gateway.base),
            &[("x-admin-token", ADMIN)],
        )
        .await;
    assert_eq!(overview["users_total"], 2);
    assert_eq!(overview["active_bans"][0]["user_id"], host_id.as_str());
    // Revoke from the overview's listed id (the stored hash) works.
    let listed = overview["recent_sessions"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let (code, body) = s
        .post(
            &s.gateway.base,
            "/admin/api/sessions/revoke",
            json!({"token": listed}),
            &[("authorization", &format!("Bearer {ADMIN}"))],
        )
        .await;
    assert_eq!((code, body["revoked"].as_bool()), (200, Some(true)));
    let (_, audit) = s
        .get(
            format!("{}/admin/api/audit", s.gateway.base),
            &[("x-admin-token", ADMIN)],
        )
        .await;
    assert!(
        audit
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["action"] == "ban_user" && r["outcome"] == "success"),
        "{audit}"
    );
    drop(client_ws);

    // Restart: accounts, bans and the 2FA key survive.
    s.gateway.stop().await.unwrap();
    s.gateway = start_gateway(s.dir.path(), &s.master.base, s.gateway_db.as_ref()).await;
    assert_eq!(
        s.login("host", PASSWORD, None).await.0,
        403,
        "ban persisted"
    );
    assert_eq!(
        s.post(
            &s.gateway.base,
            "/admin/api/unban",
            json!({"user_id": host_id}),
            &[("x-admin-token", ADMIN)]
        )
        .await
        .0,
        200
    );
    assert_eq!(
        s.login("host", PASSWORD, None).await.0,
        200,
        "account persisted"
    );
    let (code, body) = s
        .login("client", PASSWORD, Some(t.generate(unix_now() - 3600)))
        .await;
    assert_eq!(
        (code, body["error"].as_str()),
        (401, Some("Invalid 2FA code")),
        "2FA secret still decrypts after restart"
    );
}

/// A banned account cannot start a session: the ban closes its live `/ws`, every session
/// token it held is refused at `BIND` (so neither a host nor a client can register for
/// signalling) and over HTTP, and it cannot log in; after an unban it can do all three again.
async fn banned_account_cannot_start_a_session(db: Db<'_>) {
    let s = start(&db).await;
    let (user_id, registration_token, _) = s.register("banned").await;
    let (code, body) = s.login("banned", PASSWORD, None).await;
    assert_eq!(code, 200, "{body}");
    let login_token = body["token"].as_str().unwrap().to_string();
    let (mut live, bound) = bind(&s, &login_token).await;
    assert!(
        matches!(bound, Message::Bound { ref username, .. } if username == "banned"),
        "{bound:?}"
    );

    let (code, ban) = s
        .post(
            &s.gateway.base,
            "/admin/api/ban",
            json!({"user_id": user_id, "reason": "abuse"}),
            &[("x-admin-token", ADMIN)],
        )
        .await;
    assert_eq!(code, 200, "{ban}");
    assert_eq!(ban["sessions_revoked"], 2, "{ban}");
    assert_eq!(ban["connections_closed"], 1, "{ban}");
    match recv(&mut live).await {
        Some(Message::Error { message, .. }) => assert!(message.contains("suspended"), "{message}"),
        other => panic!("expected an ERROR before close, got {other:?}"),
    }
    assert!(recv(&mut live).await.is_none(), "live socket closed");

    for token in [&registration_token, &login_token] {
        let (mut ws, m) = bind(&s, token).await;
        assert!(
            matches!(
                m,
                Message::Error {
                    code: Some(401),
                    ..
                }
            ),
            "a banned account's token must not bind: {m:?}"
        );
        assert!(recv(&mut ws).await.is_none(), "refused socket closed");
        let (code, body) = s
            .post(
                &s.gateway.base,
                "/auth/2fa/setup",
                json!({}),
                &[("x-session-token", token)],
            )
            .await;
        assert_eq!(code, 401, "{body}");
    }
    let (code, body) = s.login("banned", PASSWORD, None).await;
    assert_eq!(
        (code, body["error"].as_str()),
        (403, Some("Account suspended: abuse"))
    );

    let (code, body) = s
        .post(
            &s.gateway.base,
            "/admin/api/unban",
            json!({"user_id": user_id}),
            &[("x-admin-token", ADMIN)],
        )
        .await;
    assert_eq!(code, 200, "{body}");
    let (code, body) = s.login("banned", PASSWORD, None).await;
    assert_eq!(code, 200, "{body}");
    let (_ws, bound) = bind(&s, body["token"].as_str().unwrap()).await;
    assert!(matches!(bound, Message::Bound { .. }), "{bound:?}");
}

/// Five failed logins lock the account (and IP) out, even for the right password.
async fn lockout(db: Db<'_>) {
    let s = start(&db).await;
    s.register("victim").await;
    for _ in 0..5 {
        assert_eq!(s.login("victim", "wrong password!!", None).await.0, 401);
    }
    let (code, body) = s.login("victim", PASSWORD, None).await;
    assert_eq!(code, 429, "{body}");
}

/// Unauthenticated WebSockets, unknown origins and admin calls without the token are refused.
async fn refusals(db: Db<'_>) {
    let s = start(&db).await;
    match s.ws(None).await {
        Err(tungstenite::Error::Http(r)) => assert_eq!(r.status(), 403),
        other => panic!("missing origin must be refused, got {other:?}"),
    }
    match s.ws(Some("https://evil.example")).await {
        Err(tungstenite::Error::Http(r)) => assert_eq!(r.status(), 403),
        other => panic!("foreign origin must be refused, got {other:?}"),
    }
    // Native clients' origin passes whatever the browser allow list holds.
    assert!(s.ws(Some(wavry_signal::NATIVE_ORIGIN)).await.is_ok());
    let (mut ws, m) = bind(&s, &"f".repeat(64)).await;
    assert!(
        matches!(
            m,
            Message::Error {
                code: Some(401),
                ..
            }
        ),
        "{m:?}"
    );
    assert!(recv(&mut ws).await.is_none());
    let mut ws = s.ws(Some(ORIGIN)).await.unwrap();
    send(
        &mut ws,
        &Message::Offer {
            target: "x".into(),
            from: None,
            sdp: "v=0".into(),
            public_addr: None,
        },
    )
    .await;
    assert!(matches!(recv(&mut ws).await, Some(Message::Error { .. })));
    assert!(
        recv(&mut ws).await.is_none(),
        "signalling before BIND closes the socket"
    );
    for headers in [
        &[][..],
        &[("x-admin-token", "wrong-token-wrong-token-wrong-token-00")][..],
    ] {
        let (code, _) = s
            .get(format!("{}/admin/api/overview", s.gateway.base), headers)
            .await;
        assert_eq!(code, 401);
        assert_eq!(
            s.post(
                &s.gateway.base,
                "/admin/api/ban",
                json!({"user_id": "x"}),
                headers
            )
            .await
            .0,
            401
        );
    }
    // The master refuses unauthenticated binds, lease requests, relays and admin calls.
    let mut req = format!("ws://127.0.0.1:{}/ws", s.master.port)
        .into_client_request()
        .unwrap();
    req.headers_mut().insert("origin", ORIGIN.parse().unwrap());
    let (mut mws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    send(
        &mut mws,
        &Message::Bind {
            token: "user_12345678".into(),
        },
    )
    .await;
    assert!(matches!(
        recv(&mut mws).await,
        Some(Message::Error {
            code: Some(401),
            ..
        })
    ));
    let lease_req = json!({"requester": {"sub": "a"}, "target": {"sub": "b"}});
    assert_eq!(
        s.post(&s.master.base, "/v1/leases", lease_req, &[]).await.0,
        401
    );
    assert_eq!(
        s.post(
            &s.master.base,
            "/v1/relays/register",
            json!({"relay_id": "r", "endpoints": ["127.0.0.1:4000"]}),
            &[]
        )
        .await
        .0,
        401
    );
    assert_eq!(
        s.post(
            &s.master.base,
            "/admin/api/sessions/revoke",
            json!({"sub": "a"}),
            &[]
        )
        .await
        .0,
        401
    );
    // A socket that never binds is closed by the bind timer (no further message needed).
    let mut idle = s.ws(Some(ORIGIN)).await.unwrap();
    assert!(matches!(
        recv(&mut idle).await,
        Some(Message::Error {
            code: Some(408),
            ..
        })
    ));
    assert!(recv(&mut idle).await.is_none());
    // A client that never finishes its request headers is disconnected (slow loris).
    {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", s.gateway.port))
            .await
            .unwrap();
        tcp.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        let mut buf = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(15), tcp.read_to_end(&mut buf)).await;
        assert!(
            read.is_ok(),
            "connection with unfinished headers must be closed"
        );
        assert!(!String::from_utf8_lossy(&buf).contains("200 OK"));
    }
    let page = reqwest::get(format!("{}/admin", s.gateway.base))
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains("Wavry Gateway Admin"));
    let huge = json!({"email": "a@b.co", "password": "x".repeat(100_000), "display_name": "a", "username": "abc", "public_key": "00"});
    assert_eq!(s.gw("/auth/register", huge).await.0, 413, "body limit");
    assert_eq!(
        s.gw("/webrtc/offer", json!({})).await.0,
        404,
        "WebRTC routes are not registered yet"
    );
    let (code, body) = s.get(format!("{}/health", s.gateway.base), &[]).await;
    assert_eq!((code, body["status"].as_str()), (200, Some("ok")));
    let prom = reqwest::get(format!("{}/metrics/prometheus", s.gateway.base))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        prom.contains("wavry_gateway_websocket_connections "),
        "{prom}"
    );
}

/// Polls a gateway's `/health` until its Postgres LISTEN connection is up (bounded).
async fn wait_bus(http: &reqwest::Client, base: &str) {
    let end = Instant::now() + Duration::from_secs(20);
    loop {
        let h: Value = http
            .get(format!("{base}/health"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if h["cluster_bus_listening"] == true {
            return;
        }
        assert!(Instant::now() < end, "gateway bus not listening: {h}");
        // Poll interval of a bounded readiness wait.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Two gateways sharing one Postgres database: a host bound on A and a client bound on B
/// reach each other through LISTEN/NOTIFY (relay credentials, small and large signalling
/// messages), and a ban issued on A cuts the client's socket on B.
async fn cross_instance(pg: &PgCluster) {
    let s = start(&Db::Postgres(pg, "cluster")).await;
    s.register_relay("relay-a").await;
    let (_, _, host_key) = s.register("host").await;
    let (client_id, client_token, client_key) = s.register("client").await;
    let host_token = s.login("host", PASSWORD, None).await.1["token"]
        .as_str()
        .unwrap()
        .to_string();
    let b = start_gateway(
        &s.dir.path().join("b"),
        &s.master.base,
        s.gateway_db.as_ref(),
    )
    .await;
    wait_bus(&s.http, &s.gateway.base).await;
    wait_bus(&s.http, &b.base).await;
    let (mut host_ws, _) = bind(&s, &host_token).await;
    let mut req = format!("ws://127.0.0.1:{}/ws", b.port)
        .into_client_request()
        .unwrap();
    req.headers_mut().insert("origin", ORIGIN.parse().unwrap());
    let (mut client_ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    send(
        &mut client_ws,
        &Message::Bind {
            token: client_token,
        },
    )
    .await;
    assert!(matches!(
        recv(&mut client_ws).await,
        Some(Message::Bound { .. })
    ));

    send(
        &mut client_ws,
        &Message::RequestRelay {
            target: host_key.id().to_string(),
            region: None,
            role: None,
            probes: vec![],
            exclude: vec![],
        },
    )
    .await;
    let Some(Message::RelayCredentials {
        role: mine,
        session_id: s1,
        ..
    }) = recv(&mut client_ws).await
    else {
        panic!("client credentials")
    };
    let Some(Message::RelayCredentials {
        role: theirs,
        session_id: s2,
        peer,
        ..
    }) = recv(&mut host_ws).await
    else {
        panic!("host credentials across instances")
    };
    assert_eq!(
        (mine, theirs, s1, peer.as_str()),
        (Role::Client, Role::Server, s2, "client")
    );

    send(
        &mut client_ws,
        &Message::OfferRift {
            target: "host".into(),
            from: None,
            from_wavry_id: None,
            hello_base64: "SGk=".into(),
        },
    )
    .await;
    assert_eq!(
        recv(&mut host_ws).await.unwrap(),
        Message::OfferRift {
            target: "host".into(),
            from: Some("client".into()),
            from_wavry_id: Some(client_key.id().to_string()),
            hello_base64: "SGk=".into()
        }
    );
    let big = "a".repeat(20_000);
    send(
        &mut host_ws,
        &Message::Answer {
            target: "client".into(),
            from: None,
            sdp: big.clone(),
            public_addr: None,
        },
    )
    .await;
    assert!(
        matches!(recv(&mut client_ws).await, Some(Message::Answer { sdp, .. }) if sdp == big),
        "large payload via the outbox"
    );

    let (code, body) = s
        .post(
            &s.gateway.base,
            "/admin/api/ban",
            json!({"user_id": client_id, "reason": "cluster"}),
            &[("x-admin-token", ADMIN)],
        )
        .await;
    assert_eq!(code, 200, "{body}");
    assert!(
        matches!(recv(&mut client_ws).await, Some(Message::Error { .. })),
        "ban on A reaches the socket on B"
    );
    assert!(recv(&mut client_ws).await.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_full_flow() {
    full_flow(Db::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_banned_account_cannot_start_a_session() {
    banned_account_cannot_start_a_session(Db::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_lockout() {
    lockout(Db::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_refusals() {
    refusals(Db::Sqlite).await;
}

/// The same scenarios on Postgres (one throwaway cluster, one database pair per scenario).
/// Fails — never skips — when the Postgres binaries are missing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_suite() {
    let started = Instant::now();
    let pg = PgCluster::start().unwrap_or_else(|e| panic!("{e:#}\nThe Postgres suite needs the Debian `postgresql` package: run `cargo xtask test`."));
    full_flow(Db::Postgres(&pg, "flow")).await;
    banned_account_cannot_start_a_session(Db::Postgres(&pg, "ban")).await;
    lockout(Db::Postgres(&pg, "lockout")).await;
    refusals(Db::Postgres(&pg, "refusals")).await;
    cross_instance(&pg).await;
    eprintln!("postgres suite took {:?}", started.elapsed());
}
