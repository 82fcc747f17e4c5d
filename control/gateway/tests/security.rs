//! Control-plane security findings (issue 16) on the gateway, each proven against a real
//! `wavry-gateway` process over HTTP, on SQLite and on Postgres. Client addresses are set
//! with `X-Forwarded-For` from a trusted loopback proxy (`--trust-proxy 127.0.0.1`).

#![allow(clippy::unwrap_used)]

use std::{path::Path, time::Duration};

use serde_json::{Value, json};
use totp_rs::{Algorithm, Secret, TOTP};
use wavry_control_testkit::{PgCluster, Service, TempDir, free_port};
use wavry_rift::identity::IdentityKey;

const PASSWORD: &str = "correct horse battery staple";

struct Gw {
    svc: Service,
    http: reqwest::Client,
    _dir: TempDir,
}

async fn gateway(db: Option<String>, env: &[(&str, &str)]) -> Gw {
    let dir = TempDir::new("gw-sec").unwrap();
    let port = free_port().unwrap();
    let mut args = vec![
        "--listen".to_string(),
        format!("127.0.0.1:{port}"),
        "--data-dir".into(),
        dir.path().display().to_string(),
        // No master is needed for these scenarios.
        "--master-url".into(),
        format!("http://127.0.0.1:{}", free_port().unwrap()),
        "--trust-proxy".into(),
        "127.0.0.1".into(),
    ];
    if let Some(url) = db {
        args.extend(["--database-url".to_string(), url]);
    }
    let mut envs = vec![("WAVRY_AUTH_RATE_LIMIT".to_string(), "1000".to_string())];
    envs.extend(
        env.iter()
            .map(|(k, v)| ((*k).to_string(), (*v).to_string())),
    );
    let svc = Service::spawn(
        Path::new(env!("CARGO_BIN_EXE_wavry-gateway")),
        port,
        &args,
        &envs,
        Duration::from_secs(30),
    )
    .await
    .expect("gateway starts");
    Gw {
        svc,
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap(),
        _dir: dir,
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
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

impl Gw {
    async fn post(&self, ip: &str, path: &str, body: Value, token: Option<&str>) -> (u16, Value) {
        let mut rb = self
            .http
            .post(format!("{}{path}", self.svc.base))
            .header("x-forwarded-for", ip)
            .json(&body);
        if let Some(t) = token {
            rb = rb.header("x-session-token", t);
        }
        let r = rb.send().await.unwrap();
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }

    /// Registers `name`; returns its session token.
    async fn register(&self, name: &str) -> String {
        let key = IdentityKey::generate().unwrap();
        let (code, body) = self.register_key(name, &key, &key).await;
        assert_eq!(code, 201, "{body}");
        body["token"].as_str().unwrap().to_string()
    }

    /// Registers `name` claiming `claimed`'s public key, proving it with `signer`.
    async fn register_key(
        &self,
        name: &str,
        claimed: &IdentityKey,
        signer: &IdentityKey,
    ) -> (u16, Value) {
        self.register_as(name, &claimed.id().to_string(), signer)
            .await
    }

    /// Registers `name` with the public key written as `pk` (either form), proving it with
    /// `signer`.
    async fn register_as(&self, name: &str, pk: &str, signer: &IdentityKey) -> (u16, Value) {
        let (code, ch) = self
            .post(
                "198.51.100.200",
                "/auth/register/challenge",
                json!({"public_key": pk}),
                None,
            )
            .await;
        assert_eq!(code, 200, "{ch}");
        let sig = hex::encode(signer.sign(ch["message"].as_str().unwrap().as_bytes()));
        self.post(
            "198.51.100.200",
            "/auth/register",
            json!({"email": format!("{name}@example.com"), "password": PASSWORD, "display_name": name, "username": name, "public_key": pk, "challenge": ch["challenge"], "signature": sig}),
            None,
        )
        .await
    }

    async fn login(
        &self,
        ip: &str,
        email: &str,
        password: &str,
        code: Option<String>,
    ) -> (u16, Value) {
        self.post(
            ip,
            "/auth/login",
            json!({"email": email, "password": password, "totp_code": code}),
            None,
        )
        .await
    }

    /// Turns 2FA on for the session's account (with the password); returns the secret and
    /// the new session token.
    async fn enable_2fa(&self, token: &str) -> (String, String) {
        let (code, setup) = self
            .post("198.51.100.201", "/auth/2fa/setup", json!({}), Some(token))
            .await;
        assert_eq!(code, 200, "{setup}");
        let secret = setup["secret"].as_str().unwrap().to_string();
        let (code, body) = self
            .post(
                "198.51.100.201",
                "/auth/2fa/enable",
                json!({"secret": secret, "code": totp(&secret).generate(unix_now()), "password": PASSWORD}),
                Some(token),
            )
            .await;
        assert_eq!(code, 200, "{body}");
        (secret, body["token"].as_str().unwrap().to_string())
    }
}

/// Finding 6a — a busy password hasher is not a wrong password: a flood of logins that
/// overflows the argon2 queue answers 503 and records nothing, so the owner can still log in.
async fn busy_hasher_is_not_a_failure(db: Option<String>) {
    let g = gateway(
        db,
        &[("WAVRY_ARGON2_THREADS", "1"), ("WAVRY_ARGON2_QUEUE", "1")],
    )
    .await;
    g.register("victim").await;
    let mut tasks = Vec::new();
    for i in 0..24 {
        let (http, base) = (g.http.clone(), g.svc.base.clone());
        tasks.push(tokio::spawn(async move {
            http.post(format!("{base}/auth/login"))
                .header("x-forwarded-for", format!("203.0.113.{i}"))
                .json(&json!({"email": "victim@example.com", "password": PASSWORD}))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }));
    }
    let mut codes = Vec::new();
    for t in tasks {
        codes.push(t.await.unwrap());
    }
    assert!(
        codes.iter().all(|c| matches!(c, 200 | 429 | 503)),
        "a busy hasher must not answer 401: {codes:?}"
    );
    assert!(
        codes.contains(&503),
        "the flood overflowed the queue: {codes:?}"
    );
    let (code, body) = g
        .login("192.0.2.1", "victim@example.com", PASSWORD, None)
        .await;
    assert_eq!(code, 200, "busy refusals counted as failures: {body}");
}

/// Finding 6b — the failure count is atomic with the attempt: parallel wrong passwords get
/// at most the free attempts, however many arrive at once.
async fn parallel_guesses_are_counted(db: Option<String>) {
    let g = gateway(db, &[]).await;
    g.register("target").await;
    let mut tasks = Vec::new();
    for i in 0..20 {
        let (http, base) = (g.http.clone(), g.svc.base.clone());
        tasks.push(tokio::spawn(async move {
            http.post(format!("{base}/auth/login"))
                .header("x-forwarded-for", format!("203.0.113.{i}"))
                .json(&json!({"email": "target@example.com", "password": "wrong password!!"}))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }));
    }
    let mut codes = Vec::new();
    for t in tasks {
        codes.push(t.await.unwrap());
    }
    let guesses = codes.iter().filter(|c| **c == 401).count();
    assert!(
        guesses <= 5,
        "{guesses} guesses verified in parallel: {codes:?}"
    );
    assert!(codes.iter().all(|c| matches!(c, 401 | 429)), "{codes:?}");
}

/// Finding 3 — lockouts cannot be turned on users: someone else's wrong passwords do not keep
/// the owner (with a valid 2FA code) out; known and unknown emails are answered alike; a
/// successful login with one's own account does not reset the IP's count.
async fn lockouts_cannot_be_turned_on_users(db: Option<String>) {
    let g = gateway(db, &[("WAVRY_LOGIN_IP_FREE_ATTEMPTS", "5")]).await;
    let token = g.register("owner").await;
    let (secret, _) = g.enable_2fa(&token).await;
    g.register("mallory").await;
    for _ in 0..6 {
        g.login(
            "203.0.113.66",
            "owner@example.com",
            "wrong password!!",
            None,
        )
        .await;
    }
    let code = totp(&secret).generate(unix_now() + 30);
    let (status, body) = g
        .login("192.0.2.10", "owner@example.com", PASSWORD, Some(code))
        .await;
    assert_eq!(status, 200, "owner locked out by someone else: {body}");

    // Enumeration: the same answers for a known and an unknown email, attempt by attempt
    // (each from its own address, so only the per-email count is involved).
    let mut answers = Vec::new();
    for email in ["mallory@example.com", "nobody@example.com"] {
        let mut seq = Vec::new();
        for i in 0..7 {
            let (code, body) = g
                .login(
                    &format!("198.18.{}.{i}", email.len()),
                    email,
                    "wrong password!!",
                    None,
                )
                .await;
            seq.push((code, body["error"].clone()));
        }
        answers.push(seq);
    }
    assert_eq!(answers[0], answers[1], "known and unknown emails differ");
    assert_eq!(answers[0][6].0, 429, "{:?}", answers[0]);

    // The IP's count is not reset by a success with the attacker's own account.
    let ip = "203.0.113.99";
    for i in 0..4 {
        let (c, _) = g
            .login(
                ip,
                &format!("guess{i}@example.com"),
                "wrong password!!",
                None,
            )
            .await;
        assert_eq!(c, 401);
    }
    g.register("attacker").await;
    assert_eq!(
        g.login(ip, "attacker@example.com", PASSWORD, None).await.0,
        200
    );
    let (c1, _) = g
        .login(ip, "guess4@example.com", "wrong password!!", None)
        .await;
    let (c2, _) = g
        .login(ip, "guess5@example.com", "wrong password!!", None)
        .await;
    assert_eq!((c1, c2), (401, 429), "own success reset the IP's failures");
}

/// Finding 4 — wrong codes at `/auth/2fa/setup` and `/auth/2fa/enable` are counted per
/// account (a stolen session cannot brute-force re-enrolment), and a code's step is consumed
/// with a compare-and-set (one code, one change, even in parallel).
async fn enrolment_codes_are_counted(db: Option<String>) {
    let g = gateway(db, &[]).await;
    let t0 = g.register("enrolled").await;
    let (secret, stolen) = g.enable_2fa(&t0).await;
    for i in 0..5 {
        let (code, body) = g
            .post(
                &format!("203.0.113.{i}"),
                "/auth/2fa/setup",
                json!({"totp_code": "000000"}),
                Some(&stolen),
            )
            .await;
        assert_eq!(code, 401, "{body}");
    }
    // Even the right code is now held back for this account.
    let fresh = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP";
    let (code, body) = g
        .post(
            "203.0.113.50",
            "/auth/2fa/enable",
            json!({"secret": fresh, "code": totp(fresh).generate(unix_now()), "existing_totp_code": totp(&secret).generate(unix_now() + 30)}),
            Some(&stolen),
        )
        .await;
    assert_eq!(
        code, 429,
        "re-enrolment guesses not counted per account: {body}"
    );

    // One current code replaces 2FA at most once, however many requests carry it at once.
    let t1 = g.register("racer").await;
    let (secret, session) = g.enable_2fa(&t1).await;
    let current = totp(&secret).generate(unix_now() + 30);
    let mut tasks = Vec::new();
    for i in 0..4 {
        let (http, base, session, current) = (
            g.http.clone(),
            g.svc.base.clone(),
            session.clone(),
            current.clone(),
        );
        tasks.push(tokio::spawn(async move {
            http.post(format!("{base}/auth/2fa/enable"))
                .header("x-forwarded-for", format!("198.51.100.{i}"))
                .header("x-session-token", session)
                .json(&json!({"secret": fresh, "code": totp(fresh).generate(unix_now()), "existing_totp_code": current}))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }));
    }
    let mut ok = 0;
    for t in tasks {
        ok += usize::from(t.await.unwrap() == 200);
    }
    assert!(ok <= 1, "{ok} parallel changes with one code");
}

/// Finding 7 — enabling 2FA asks for the password as well as the session token.
async fn enabling_2fa_needs_the_password(db: Option<String>) {
    let g = gateway(db, &[]).await;
    let token = g.register("reauth").await;
    let (_, setup) = g
        .post("192.0.2.7", "/auth/2fa/setup", json!({}), Some(&token))
        .await;
    let secret = setup["secret"].as_str().unwrap().to_string();
    let enable = |pw: Option<&str>| json!({"secret": secret, "code": totp(&secret).generate(unix_now()), "password": pw});
    for pw in [None, Some("not the password")] {
        let (code, body) = g
            .post("192.0.2.7", "/auth/2fa/enable", enable(pw), Some(&token))
            .await;
        assert_eq!(
            code, 401,
            "2FA enabled with a session token alone ({pw:?}): {body}"
        );
    }
    let (code, body) = g
        .post(
            "192.0.2.7",
            "/auth/2fa/enable",
            enable(Some(PASSWORD)),
            Some(&token),
        )
        .await;
    assert_eq!(code, 200, "{body}");
}

/// Finding 2 — the global limiter keys routes by the matched route: requests to many
/// distinct unknown paths cannot fill its table and lock everyone out.
async fn global_limiter_cannot_be_filled(db: Option<String>) {
    let g = gateway(db, &[("WAVRY_GLOBAL_RATE_LIMIT_MAX_KEYS", "4")]).await;
    for i in 0..16 {
        let (code, _) = g
            .post(
                "203.0.113.5",
                &format!("/no/such/path/{i}"),
                json!({}),
                None,
            )
            .await;
        assert_eq!(code, 404);
    }
    for i in 0..8 {
        let (code, body) = g
            .login(
                &format!("198.51.100.{i}"),
                &format!("someone{i}@example.com"),
                "wrong password!!",
                None,
            )
            .await;
        assert_ne!(
            code, 429,
            "newcomer {i} refused by a full limiter table: {body}"
        );
    }
}

/// Finding 9 — a count that only grows is exposed as a counter (relay sessions brokered),
/// in OpenMetrics text from `prometheus-client`.
async fn metrics_have_the_right_types(db: Option<String>) {
    let g = gateway(db, &[]).await;
    let text = g
        .http
        .get(format!("{}/metrics/prometheus", g.svc.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.contains("# TYPE wavry_gateway_relay_sessions counter"),
        "{text}"
    );
    assert!(
        text.contains("wavry_gateway_relay_sessions_total 0"),
        "{text}"
    );
    assert!(
        text.contains("# TYPE wavry_gateway_websocket_connections gauge"),
        "{text}"
    );
    assert!(text.trim_end().ends_with("# EOF"), "{text}");
}

/// Finding 5 — a public key must be proven at registration: nobody can claim another's
/// Wavry ID (which would leave the owner with 409); the key may be given as a Wavry ID.
async fn public_keys_are_proven(db: Option<String>) {
    let g = gateway(db, &[]).await;
    let (owner, impostor) = (
        IdentityKey::generate().unwrap(),
        IdentityKey::generate().unwrap(),
    );
    let (code, body) = g.register_key("impostor", &owner, &impostor).await;
    assert_eq!(code, 401, "someone else's key accepted: {body}");
    let pk = hex::encode(owner.id().as_bytes());
    let (code, body) = g
        .post(
            "198.51.100.200",
            "/auth/register",
            json!({"email": "bare@example.com", "password": PASSWORD, "display_name": "b", "username": "bare", "public_key": pk}),
            None,
        )
        .await;
    assert_eq!(code, 401, "unproven key accepted: {body}");
    let (code, body) = g.register_key("owner", &owner, &owner).await;
    assert_eq!(code, 201, "{body}");
    assert_eq!(body["user"]["wavry_id"], owner.id().to_string());
}

/// Finding 5, continued — one key, two spellings: a public key is taken as 64 hex
/// characters (any case) or as its Wavry ID and stored in one form, so a key registered one
/// way is found the other way (409); anything else is a 400 that names both forms.
async fn public_keys_take_either_form(db: Option<String>) {
    let g = gateway(db, &[]).await;
    let (a, b) = (
        IdentityKey::generate().unwrap(),
        IdentityKey::generate().unwrap(),
    );
    let hex_of = |k: &IdentityKey| hex::encode(k.id().as_bytes());
    let (code, body) = g.register_as("byhex", &hex_of(&a), &a).await;
    assert_eq!(code, 201, "{body}");
    assert_eq!(body["user"]["wavry_id"], a.id().to_string());
    let (code, body) = g.register_as("byid", &b.id().to_string(), &b).await;
    assert_eq!(code, 201, "{body}");
    assert_eq!(body["user"]["wavry_id"], b.id().to_string());
    assert_eq!(body["user"]["public_key"], hex_of(&b), "stored as hex");
    let (code, body) = g.register_as("againid", &a.id().to_string(), &a).await;
    assert_eq!(
        code, 409,
        "hex key registered again as its Wavry ID: {body}"
    );
    let (code, body) = g
        .register_as("againhex", &hex_of(&b).to_uppercase(), &b)
        .await;
    assert_eq!(code, 409, "Wavry ID registered again as hex: {body}");

    let id = a.id().to_string();
    for bad in [
        String::new(),
        "xyz".into(),
        "ab".repeat(31),
        "ab".repeat(33),
        "zz".repeat(32),
        format!("{id}A"),
        id[..42].to_string(),
        "+".repeat(43),
    ] {
        let (code, body) = g
            .post(
                "198.51.100.202",
                "/auth/register/challenge",
                json!({"public_key": bad}),
                None,
            )
            .await;
        assert_eq!(code, 400, "challenge for {bad:?}: {body}");
        let msg = body["error"].as_str().unwrap();
        assert!(
            msg.contains("hex") && msg.contains("Wavry ID"),
            "the error names both forms: {msg}"
        );
        let (code, body) = g
            .post(
                "198.51.100.202",
                "/auth/register",
                json!({"email": "bad@example.com", "password": PASSWORD, "display_name": "b", "username": "badkey", "public_key": bad, "challenge": "x", "signature": "00"}),
                None,
            )
            .await;
        assert_eq!(code, 400, "registration with {bad:?}: {body}");
        assert_eq!(body["error"].as_str(), Some(msg));
    }
}

/// A login may name the account by username instead of email: the same account, and one
/// failure budget whichever name the guesses use (switching names buys no extra guesses).
async fn login_by_username_shares_the_budget(db: Option<String>) {
    let g = gateway(db, &[]).await;
    g.register("carol").await;
    let g = &g;
    let login =
        |ip: String, body: Value| async move { g.post(&ip, "/auth/login", body, None).await };
    let (code, body) = login(
        "192.0.2.30".into(),
        json!({"username": " Carol ", "password": PASSWORD}),
    )
    .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["username"], "carol");
    assert_eq!(body["email"], "carol@example.com");
    for both_or_neither in [
        json!({"username": "carol", "email": "carol@example.com", "password": PASSWORD}),
        json!({"password": PASSWORD}),
    ] {
        let (code, body) = login("192.0.2.31".into(), both_or_neither).await;
        assert_eq!(code, 400, "{body}");
    }
    let (code, body) = login(
        "192.0.2.32".into(),
        json!({"username": "nobody", "password": PASSWORD}),
    )
    .await;
    assert_eq!(code, 401, "unknown usernames are wrong credentials: {body}");

    // Five wrong guesses, three by email and two by username, each from its own address.
    for i in 0..5 {
        let name = if i < 3 {
            json!({"email": "carol@example.com", "password": "wrong password!!"})
        } else {
            json!({"username": "carol", "password": "wrong password!!"})
        };
        let (code, body) = login(format!("203.0.113.{}", 40 + i), name).await;
        assert_eq!(code, 401, "guess {i}: {body}");
    }
    let (code, body) = login(
        "192.0.2.33".into(),
        json!({"username": "carol", "password": PASSWORD}),
    )
    .await;
    assert_eq!(code, 429, "the username has its own budget: {body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_busy_hasher_is_not_a_failure() {
    busy_hasher_is_not_a_failure(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_parallel_guesses_are_counted() {
    parallel_guesses_are_counted(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_lockouts_cannot_be_turned_on_users() {
    lockouts_cannot_be_turned_on_users(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_enrolment_codes_are_counted() {
    enrolment_codes_are_counted(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_global_limiter_cannot_be_filled() {
    global_limiter_cannot_be_filled(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_metrics_have_the_right_types() {
    metrics_have_the_right_types(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_public_keys_are_proven() {
    public_keys_are_proven(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_public_keys_take_either_form() {
    public_keys_take_either_form(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_login_by_username_shares_the_budget() {
    login_by_username_shares_the_budget(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_enabling_2fa_needs_the_password() {
    enabling_2fa_needs_the_password(None).await;
}

/// The same scenarios on one throwaway Postgres cluster. Fails — never skips — without it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_security() {
    let pg = PgCluster::start().unwrap_or_else(|e| panic!("{e:#}\nThe Postgres suite needs the Debian `postgresql` package: run `cargo xtask test`."));
    for name in [
        "busy", "parallel", "lockout", "enrol", "reauth", "global", "metrics", "proof", "forms",
        "byname",
    ] {
        pg.create_db(name).unwrap();
    }
    busy_hasher_is_not_a_failure(Some(pg.url("busy"))).await;
    parallel_guesses_are_counted(Some(pg.url("parallel"))).await;
    lockouts_cannot_be_turned_on_users(Some(pg.url("lockout"))).await;
    enrolment_codes_are_counted(Some(pg.url("enrol"))).await;
    enabling_2fa_needs_the_password(Some(pg.url("reauth"))).await;
    global_limiter_cannot_be_filled(Some(pg.url("global"))).await;
    metrics_have_the_right_types(Some(pg.url("metrics"))).await;
    public_keys_are_proven(Some(pg.url("proof"))).await;
    public_keys_take_either_form(Some(pg.url("forms"))).await;
    login_by_username_shares_the_budget(Some(pg.url("byname"))).await;
}
