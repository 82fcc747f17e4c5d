//! Accounts: registration, login with lockouts and 2FA, logout, TOTP setup/enable.

use std::net::{IpAddr, SocketAddr};

use argon2::{
    Algorithm, Argon2, Block, Params, PasswordHash, Version,
    password_hash::{Output, ParamsString, SaltString, rand_core::OsRng},
};
use axum::{
    Json,
    body::Bytes,
    extract::{ConnectInfo, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
};
use serde::Deserialize;
use serde_json::{Value, json};
use sqlx::Row;
use wavry_control_core::{hash_token, new_token, unix_now};

use crate::{
    app::{ApiError, ApiResult, AppState, St, bad, client_ip, parse_json, rfc3339},
    totp,
};

/// Session lifetime.
const SESSION_TTL_SECS: i64 = 24 * 3600;
/// Failures before a lockout.
const LOCKOUT_FAILURES: i64 = 5;
/// Lockout duration after the last failure.
const LOCKOUT_SECS: i64 = 15 * 60;

thread_local! {
    /// Argon2 working memory (19 MiB with the default parameters), allocated once per pool
    /// thread and reused, so the process does not keep a fresh 19 MiB region per hash.
    static BLOCKS: std::cell::RefCell<Vec<Block>> = const { std::cell::RefCell::new(Vec::new()) };
}

fn argon2_into(
    a: &Argon2<'_>,
    pw: &[u8],
    salt: &[u8],
    out: &mut [u8],
) -> Result<(), argon2::Error> {
    BLOCKS.with(|b| {
        let mut b = b.borrow_mut();
        let n = a.params().block_count();
        if b.len() < n {
            b.resize(n, Block::default());
        }
        a.hash_password_into_with_memory(pw, salt, out, &mut b[..n])
    })
}

/// Argon2id (crate defaults: v0x13, m = 19456 KiB, t = 2, p = 1), PHC string.
pub(crate) fn hash_password(pw: &str) -> anyhow::Result<String> {
    let salt = SaltString::generate(&mut OsRng);
    let a = Argon2::default();
    let mut salt_buf = [0u8; 64];
    let salt_bytes = salt
        .as_salt()
        .decode_b64(&mut salt_buf)
        .map_err(|e| anyhow::anyhow!("salt: {e}"))?;
    let mut out = [0u8; 32];
    argon2_into(&a, pw.as_bytes(), salt_bytes, &mut out)
        .map_err(|e| anyhow::anyhow!("argon2: {e}"))?;
    let phc = PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(a.params()).map_err(|e| anyhow::anyhow!("params: {e}"))?,
        salt: Some(salt.as_salt()),
        hash: Some(Output::new(&out).map_err(|e| anyhow::anyhow!("output: {e}"))?),
    };
    Ok(phc.to_string())
}

fn verify_password(pw: &str, phc: &str) -> bool {
    let check = || -> Option<bool> {
        let h = PasswordHash::new(phc).ok()?;
        let alg = Algorithm::try_from(h.algorithm).ok()?;
        let version = h
            .version
            .map(Version::try_from)
            .transpose()
            .ok()?
            .unwrap_or_default();
        let params = Params::try_from(&h).ok()?;
        let expected = h.hash?;
        let mut salt_buf = [0u8; 64];
        let salt = h.salt?.decode_b64(&mut salt_buf).ok()?;
        let mut out = vec![0u8; expected.len()];
        argon2_into(
            &Argon2::new(alg, version, params),
            pw.as_bytes(),
            salt,
            &mut out,
        )
        .ok()?;
        Some(wavry_control_core::ct_eq(&out, expected.as_bytes()))
    };
    check().unwrap_or(false)
}

async fn verify_blocking(st: &AppState, pw: String, phc: String) -> bool {
    st.hash_pool
        .run(move || verify_password(&pw, &phc))
        .await
        .unwrap_or(false)
}

/// Job run on the argon2 pool.
type Job = Box<dyn FnOnce() + Send>;

/// A fixed set of threads for argon2 work. Each hash needs 19 MiB; running them on a few
/// long-lived threads bounds both concurrency and the memory the allocator keeps per thread
/// (with `spawn_blocking`, every new blocking thread grew its own arena).
pub(crate) struct HashPool {
    tx: std::sync::mpsc::SyncSender<Job>,
}

impl HashPool {
    /// Starts `threads` workers.
    pub(crate) fn new(threads: usize) -> std::io::Result<Self> {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Job>(1024);
        let rx = std::sync::Arc::new(std::sync::Mutex::new(rx));
        for i in 0..threads.max(1) {
            let rx = rx.clone();
            std::thread::Builder::new()
                .name(format!("argon2-{i}"))
                .spawn(move || {
                    loop {
                        let job = rx
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner)
                            .recv();
                        match job {
                            Ok(job) => job(),
                            Err(_) => return,
                        }
                    }
                })?;
        }
        Ok(Self { tx })
    }

    /// Runs `f` on the pool; `None` when the queue (1024 jobs) is full or the pool is gone.
    pub(crate) async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Option<T> {
        let (otx, orx) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            let _ = otx.send(f());
        });
        self.tx.try_send(job).ok()?;
        orx.await.ok()
    }
}

// ---------------------------------------------------------------------------------------------
// Validation

fn norm_email(e: &str) -> Option<String> {
    let e = e.trim().to_ascii_lowercase();
    if e.len() > 254 || e.chars().any(char::is_whitespace) || e.matches('@').count() != 1 {
        return None;
    }
    let (local, domain) = e.split_once('@')?;
    if local.is_empty() || !domain.contains('.') || domain.starts_with('.') || domain.ends_with('.')
    {
        return None;
    }
    Some(e)
}

fn norm_username(u: &str) -> Option<String> {
    let u = u.trim().to_ascii_lowercase();
    ((3..=32).contains(&u.len())
        && u.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-')))
    .then_some(u)
}

fn norm_display_name(d: &str) -> Option<String> {
    let d = d.trim();
    ((1..=64).contains(&d.chars().count()) && !d.chars().any(char::is_control))
        .then(|| d.to_owned())
}

fn norm_public_key(k: &str) -> Option<String> {
    let k = k.trim().to_ascii_lowercase();
    ((64..=128).contains(&k.len()) && k.len() % 2 == 0 && k.bytes().all(|b| b.is_ascii_hexdigit()))
        .then_some(k)
}

// ---------------------------------------------------------------------------------------------
// Sessions and responses

pub(crate) async fn create_session(
    st: &AppState,
    user_id: &str,
    ip: IpAddr,
) -> ApiResult<(String, i64, i64)> {
    let token = new_token().map_err(|_| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "rng"))?;
    let now = unix_now();
    sqlx::query("INSERT INTO sessions (token_hash, user_id, expires_at, ip_address, created_at) VALUES ($1, $2, $3, $4, $5)")
        .bind(hash_token(&token))
        .bind(user_id)
        .bind(now + SESSION_TTL_SECS)
        .bind(ip.to_string())
        .bind(now)
        .execute(&st.db)
        .await?;
    Ok((token, now + SESSION_TTL_SECS, now))
}

struct UserRow {
    id: String,
    email: String,
    username: String,
    password_hash: String,
    display_name: String,
    public_key: String,
    totp_secret: Option<String>,
    totp_last_step: i64,
    created_at: i64,
}

const USER_COLS: &str = "id, email, username, password_hash, display_name, public_key, totp_secret, totp_last_step, created_at";

fn user_from(r: &sqlx::any::AnyRow) -> Result<UserRow, sqlx::Error> {
    Ok(UserRow {
        id: r.try_get(0)?,
        email: r.try_get(1)?,
        username: r.try_get(2)?,
        password_hash: r.try_get(3)?,
        display_name: r.try_get(4)?,
        public_key: r.try_get(5)?,
        totp_secret: r.try_get(6)?,
        totp_last_step: r.try_get(7)?,
        created_at: r.try_get(8)?,
    })
}

async fn user_by_email(st: &AppState, email: &str) -> ApiResult<Option<UserRow>> {
    let row = sqlx::query(&format!("SELECT {USER_COLS} FROM users WHERE email = $1"))
        .bind(email)
        .fetch_optional(&st.db)
        .await?;
    Ok(row.as_ref().map(user_from).transpose()?)
}

async fn user_by_id(st: &AppState, id: &str) -> ApiResult<Option<UserRow>> {
    let row = sqlx::query(&format!("SELECT {USER_COLS} FROM users WHERE id = $1"))
        .bind(id)
        .fetch_optional(&st.db)
        .await?;
    Ok(row.as_ref().map(user_from).transpose()?)
}

fn auth_response(u: &UserRow, token: &str, expires_at: i64, created_at: i64, ip: IpAddr) -> Value {
    json!({
        "user": {
            "id": u.id, "email": u.email, "username": u.username, "public_key": u.public_key,
            "display_name": u.display_name, "created_at": rfc3339(u.created_at),
            "wavry_id": crate::app::wavry_id_of(&u.public_key),
        },
        "session": { "token": token, "user_id": u.id, "expires_at": rfc3339(expires_at), "ip_address": ip.to_string(), "created_at": rfc3339(created_at) },
        "token": token, "user_id": u.id, "email": u.email, "username": u.username,
        "totp_required": false, "totp_enabled": u.totp_secret.is_some(),
    })
}

fn limit(st: &AppState, scope: &str, ip: IpAddr) -> ApiResult<()> {
    if st.auth_limiter.check(&format!("{scope}:{ip}")) {
        Ok(())
    } else {
        st.count(&st.metrics.rate_limited);
        tracing::warn!(event = "RateLimitExceeded", scope, "auth rate limit");
        Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "Too many requests",
        ))
    }
}

fn invalid(st: &AppState, msg: &str) -> ApiError {
    st.count(&st.metrics.validation_errors);
    bad(msg)
}

// ---------------------------------------------------------------------------------------------
// Register

#[derive(Deserialize)]
pub(crate) struct RegisterReq {
    email: String,
    password: String,
    display_name: String,
    username: String,
    public_key: String,
}

pub(crate) async fn register(
    State(st): State<St>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    let ip = client_ip(&st, peer, &headers);
    st.count(&st.metrics.register_attempts);
    limit(&st, "register", ip)?;
    let req: RegisterReq =
        parse_json(&body).inspect_err(|_| st.count(&st.metrics.validation_errors))?;
    let email = norm_email(&req.email).ok_or_else(|| invalid(&st, "invalid email"))?;
    let username = norm_username(&req.username)
        .ok_or_else(|| invalid(&st, "username must be 3..32 characters of [a-z0-9_.-]"))?;
    let display_name = norm_display_name(&req.display_name)
        .ok_or_else(|| invalid(&st, "display_name must be 1..64 characters"))?;
    let public_key = norm_public_key(&req.public_key)
        .ok_or_else(|| invalid(&st, "public_key must be 64..128 hex characters"))?;
    if !(12..=128).contains(&req.password.len()) {
        return Err(invalid(&st, "password must be 12..128 bytes"));
    }
    let taken = sqlx::query("SELECT email, username, public_key FROM users WHERE email = $1 OR username = $2 OR public_key = $3")
        .bind(&email)
        .bind(&username)
        .bind(&public_key)
        .fetch_optional(&st.db)
        .await?;
    if taken.is_some() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "email, username or public key already registered",
        ));
    }
    let pw = req.password;
    let phc = st
        .hash_pool
        .run(move || hash_password(&pw))
        .await
        .ok_or_else(|| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "server busy, retry"))?
        .map_err(|_| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "hashing failed"))?;
    let id = uuid::Uuid::new_v4().to_string();
    let now = unix_now();
    let res = sqlx::query("INSERT INTO users (id, email, username, password_hash, display_name, public_key, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7)")
        .bind(&id)
        .bind(&email)
        .bind(&username)
        .bind(&phc)
        .bind(&display_name)
        .bind(&public_key)
        .bind(now)
        .execute(&st.db)
        .await;
    if let Err(e) = res {
        // A concurrent registration won the unique index.
        if e.as_database_error()
            .is_some_and(sqlx::error::DatabaseError::is_unique_violation)
        {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "email, username or public key already registered",
            ));
        }
        st.count(&st.metrics.db_errors);
        return Err(e.into());
    }
    let user = user_by_id(&st, &id)
        .await?
        .ok_or_else(|| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "user vanished"))?;
    let (token, exp, created) = create_session(&st, &id, ip).await?;
    st.count(&st.metrics.register_success);
    tracing::info!(event = "Registration", user_id = %id, "account registered");
    Ok((
        StatusCode::CREATED,
        Json(auth_response(&user, &token, exp, created, ip)),
    )
        .into_response())
}

// ---------------------------------------------------------------------------------------------
// Login

async fn locked_out(st: &AppState, ids: &[String]) -> ApiResult<bool> {
    let since = unix_now() - LOCKOUT_SECS;
    for id in ids {
        let row =
            sqlx::query("SELECT count, last_failure FROM login_failures WHERE identifier = $1")
                .bind(id)
                .fetch_optional(&st.db)
                .await?;
        if let Some(r) = row {
            let (count, last): (i64, i64) = (r.try_get(0)?, r.try_get(1)?);
            if count >= LOCKOUT_FAILURES && last > since {
                return Ok(true);
            }
        }
    }
    Ok(false)
}

async fn record_failure(st: &AppState, ids: &[String]) -> ApiResult<()> {
    let now = unix_now();
    for id in ids {
        // A failure after an expired lockout window starts a fresh count.
        sqlx::query(
            "INSERT INTO login_failures (identifier, count, last_failure) VALUES ($1, 1, $2) \
             ON CONFLICT (identifier) DO UPDATE SET count = CASE WHEN login_failures.last_failure <= $3 THEN 1 ELSE login_failures.count + 1 END, last_failure = $2",
        )
        .bind(id)
        .bind(now)
        .bind(now - LOCKOUT_SECS)
        .execute(&st.db)
        .await?;
    }
    st.count(&st.metrics.auth_failures);
    Ok(())
}

async fn clear_failures(st: &AppState, ids: &[String]) -> ApiResult<()> {
    for id in ids {
        sqlx::query("DELETE FROM login_failures WHERE identifier = $1")
            .bind(id)
            .execute(&st.db)
            .await?;
    }
    Ok(())
}

async fn active_ban(st: &AppState, user_id: &str) -> ApiResult<Option<String>> {
    let row = sqlx::query("SELECT reason FROM user_bans WHERE user_id = $1 AND (expires_at IS NULL OR expires_at > $2)")
        .bind(user_id)
        .bind(unix_now())
        .fetch_optional(&st.db)
        .await?;
    Ok(match row {
        Some(r) => Some(r.try_get::<Option<String>, _>(0)?.unwrap_or_default()),
        None => None,
    })
}

#[derive(Deserialize)]
pub(crate) struct LoginReq {
    email: String,
    password: String,
    #[serde(default)]
    totp_code: Option<String>,
}

pub(crate) async fn login(
    State(st): State<St>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    let ip = client_ip(&st, peer, &headers);
    st.count(&st.metrics.login_attempts);
    limit(&st, "login", ip)?;
    let req: LoginReq = parse_json(&body)?;
    let email = norm_email(&req.email).ok_or_else(|| invalid(&st, "invalid email"))?;
    if !(1..=128).contains(&req.password.len()) {
        return Err(invalid(&st, "invalid password"));
    }
    let email_key = format!("email:{email}");
    let ip_key = format!("ip:{ip}");
    let both = [email_key.clone(), ip_key.clone()];
    if locked_out(&st, &both).await? {
        st.count(&st.metrics.rate_limited);
        tracing::warn!(
            event = "RateLimitExceeded",
            reason = "lockout",
            "login locked out"
        );
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "Too many failed attempts; try again later",
        ));
    }
    let invalid_credentials = || ApiError::new(StatusCode::UNAUTHORIZED, "Invalid credentials");
    let Some(user) = user_by_email(&st, &email).await? else {
        // Same work as a real check, so timing does not reveal which emails exist.
        let _ = verify_blocking(&st, req.password, st.dummy_hash.clone()).await;
        record_failure(&st, std::slice::from_ref(&ip_key)).await?;
        tracing::info!(
            event = "LoginFailure",
            reason = "UserNotFound",
            "login failed"
        );
        return Err(invalid_credentials());
    };
    if !verify_blocking(&st, req.password, user.password_hash.clone()).await {
        record_failure(&st, &both).await?;
        tracing::info!(event = "LoginFailure", reason = "InvalidPassword", user_id = %user.id, "login failed");
        return Err(invalid_credentials());
    }
    if let Some(reason) = active_ban(&st, &user.id).await? {
        tracing::info!(event = "AccountSuspended", user_id = %user.id, "login refused: banned");
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!("Account suspended: {reason}"),
        ));
    }
    if let Some(stored) = &user.totp_secret {
        let Some(code) = req
            .totp_code
            .as_deref()
            .map(str::trim)
            .filter(|c| !c.is_empty())
        else {
            tracing::info!(event = "LoginFailure", reason = "TotpRequired", user_id = %user.id, "2FA code required");
            return Err(ApiError(
                StatusCode::UNAUTHORIZED,
                "2FA required".into(),
                Some(json!({ "totp_required": true })),
            ));
        };
        if !totp::code_well_formed(code) {
            record_failure(&st, std::slice::from_ref(&email_key)).await?;
            return Err(ApiError::new(StatusCode::UNAUTHORIZED, "Invalid 2FA code"));
        }
        let secret = st.totp_key.open(&user.id, stored).map_err(|e| {
            tracing::error!(error = %e, user_id = %user.id, "cannot decrypt TOTP secret");
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "2FA unavailable")
        })?;
        let now = u64::try_from(unix_now()).unwrap_or(0);
        let Some(step) = totp::check(&secret, code, now, user.totp_last_step) else {
            record_failure(&st, &both).await?;
            tracing::info!(event = "LoginFailure", reason = "InvalidTotp", user_id = %user.id, "login failed");
            return Err(ApiError::new(StatusCode::UNAUTHORIZED, "Invalid 2FA code"));
        };
        // Consume the step atomically so a code works once.
        let used = sqlx::query(
            "UPDATE users SET totp_last_step = $1 WHERE id = $2 AND totp_last_step < $1",
        )
        .bind(step)
        .bind(&user.id)
        .execute(&st.db)
        .await?
        .rows_affected();
        if used == 0 {
            record_failure(&st, &both).await?;
            return Err(ApiError::new(StatusCode::UNAUTHORIZED, "Invalid 2FA code"));
        }
    }
    clear_failures(&st, &both).await?;
    let (token, exp, created) = create_session(&st, &user.id, ip).await?;
    st.count(&st.metrics.login_success);
    tracing::info!(event = "LoginSuccess", user_id = %user.id, "login");
    Ok(Json(auth_response(&user, &token, exp, created, ip)))
}

// ---------------------------------------------------------------------------------------------
// Logout

fn session_token(headers: &HeaderMap) -> Option<&str> {
    wavry_control_core::presented_token(headers, "x-session-token")
}

pub(crate) async fn logout(
    State(st): State<St>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> ApiResult<Json<Value>> {
    let ip = client_ip(&st, peer, &headers);
    st.count(&st.metrics.logout_attempts);
    limit(&st, "logout", ip)?;
    let token = session_token(&headers)
        .filter(|t| wavry_control_core::token_syntax_ok(t))
        .ok_or_else(|| invalid(&st, "missing or invalid session token"))?;
    let h = hash_token(token);
    if !st.post_auth_limiter.check(&format!("logout:{ip}:{h}")) {
        st.count(&st.metrics.rate_limited);
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "Too many requests",
        ));
    }
    let n = sqlx::query("DELETE FROM sessions WHERE token_hash = $1")
        .bind(&h)
        .execute(&st.db)
        .await?
        .rows_affected();
    st.kick_session(&h, "logged out").await;
    st.count(&st.metrics.logout_success);
    tracing::info!(event = "Logout", revoked = n > 0, "logout");
    Ok(Json(json!({ "revoked": n > 0 })))
}

// ---------------------------------------------------------------------------------------------
// TOTP

async fn session_user_row(st: &AppState, headers: &HeaderMap) -> ApiResult<UserRow> {
    let token = session_token(headers).unwrap_or_default();
    let su = st.session_user(token).await?.ok_or_else(|| {
        st.count(&st.metrics.auth_failures);
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "valid session token required (X-Session-Token)",
        )
    })?;
    user_by_id(st, &su.user_id)
        .await?
        .ok_or_else(|| ApiError::new(StatusCode::UNAUTHORIZED, "unknown user"))
}

/// Requires a valid current code when 2FA is already on (and consumes its step).
async fn require_current_code(st: &AppState, u: &UserRow, code: Option<&str>) -> ApiResult<()> {
    let Some(stored) = &u.totp_secret else {
        return Ok(());
    };
    let code = code
        .map(str::trim)
        .filter(|c| totp::code_well_formed(c))
        .ok_or_else(|| ApiError::new(StatusCode::UNAUTHORIZED, "current 2FA code required"))?;
    let secret = st
        .totp_key
        .open(&u.id, stored)
        .map_err(|_| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "2FA unavailable"))?;
    let step = totp::check(
        &secret,
        code,
        u64::try_from(unix_now()).unwrap_or(0),
        u.totp_last_step,
    )
    .ok_or_else(|| ApiError::new(StatusCode::UNAUTHORIZED, "Invalid 2FA code"))?;
    sqlx::query("UPDATE users SET totp_last_step = $1 WHERE id = $2")
        .bind(step)
        .bind(&u.id)
        .execute(&st.db)
        .await?;
    Ok(())
}

#[derive(Deserialize)]
pub(crate) struct SetupReq {
    #[serde(default)]
    totp_code: Option<String>,
}

/// `POST /auth/2fa/setup` (session token): a fresh secret; nothing stored.
pub(crate) async fn totp_setup(
    State(st): State<St>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    let ip = client_ip(&st, peer, &headers);
    st.count(&st.metrics.totp_setup_attempts);
    limit(&st, "totp_setup", ip)?;
    let req: SetupReq = if body.is_empty() {
        SetupReq { totp_code: None }
    } else {
        parse_json(&body)?
    };
    let u = session_user_row(&st, &headers).await?;
    // Only checked here, consumed at enable: setup stores nothing.
    if let Some(stored) = &u.totp_secret {
        let secret = st
            .totp_key
            .open(&u.id, stored)
            .map_err(|_| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "2FA unavailable"))?;
        let ok = req.totp_code.as_deref().is_some_and(|c| {
            totp::check(
                &secret,
                c.trim(),
                u64::try_from(unix_now()).unwrap_or(0),
                u.totp_last_step,
            )
            .is_some()
        });
        if !ok {
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "current 2FA code required",
            ));
        }
    }
    let secret =
        totp::new_secret().map_err(|_| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "rng"))?;
    st.count(&st.metrics.totp_setup_success);
    tracing::info!(event = "TotpSetup", user_id = %u.id, "2FA setup");
    Ok(Json(
        json!({ "secret": secret, "otpauth_url": totp::otpauth_url(&secret, &u.email) }),
    ))
}

#[derive(Deserialize)]
pub(crate) struct EnableReq {
    secret: String,
    code: String,
    #[serde(default)]
    existing_totp_code: Option<String>,
}

/// `POST /auth/2fa/enable` (session token): stores the encrypted secret after a valid code,
/// revokes every other session and returns a new one.
pub(crate) async fn totp_enable(
    State(st): State<St>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    let ip = client_ip(&st, peer, &headers);
    st.count(&st.metrics.totp_enable_attempts);
    limit(&st, "totp_enable", ip)?;
    let req: EnableReq = parse_json(&body)?;
    let u = session_user_row(&st, &headers).await?;
    if !totp::secret_ok(&req.secret) {
        return Err(invalid(&st, "secret must be base32 of at least 16 bytes"));
    }
    require_current_code(&st, &u, req.existing_totp_code.as_deref()).await?;
    let now = u64::try_from(unix_now()).unwrap_or(0);
    let step = totp::check(&req.secret, req.code.trim(), now, 0)
        .ok_or_else(|| invalid(&st, "invalid 2FA code for this secret"))?;
    let sealed = st
        .totp_key
        .seal(&u.id, &req.secret.trim().to_ascii_uppercase())
        .map_err(|_| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "encryption failed"))?;
    sqlx::query("UPDATE users SET totp_secret = $1, totp_last_step = $2 WHERE id = $3")
        .bind(&sealed)
        .bind(step)
        .bind(&u.id)
        .execute(&st.db)
        .await?;
    sqlx::query("DELETE FROM sessions WHERE user_id = $1")
        .bind(&u.id)
        .execute(&st.db)
        .await?;
    st.kick_user(&u.id, "2FA enabled: sign in again").await;
    let u = user_by_id(&st, &u.id)
        .await?
        .ok_or_else(|| ApiError::new(StatusCode::UNAUTHORIZED, "unknown user"))?;
    let (token, exp, created) = create_session(&st, &u.id, ip).await?;
    st.count(&st.metrics.totp_enable_success);
    tracing::info!(event = "TotpEnabled", user_id = %u.id, "2FA enabled");
    Ok(Json(auth_response(&u, &token, exp, created, ip)))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn argon2id_hashes_verify_and_are_phc() {
        let h = hash_password("correct horse battery").unwrap();
        assert!(h.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{h}");
        assert!(verify_password("correct horse battery", &h));
        assert!(!verify_password("wrong horse battery", &h));
        assert!(!verify_password("x", "not a phc string"));
    }

    #[test]
    fn validation_rules() {
        assert_eq!(norm_email(" A@B.co ").as_deref(), Some("a@b.co"));
        for bad in ["a@b", "@b.co", "a@.b.co", "a@b.co.", "a b@c.de", "a@@b.co"] {
            assert!(norm_email(bad).is_none(), "{bad}");
        }
        assert_eq!(norm_username(" Alice_1 ").as_deref(), Some("alice_1"));
        assert!(norm_username("ab").is_none() && norm_username("a b c").is_none());
        assert!(norm_display_name("x\u{7}").is_none() && norm_display_name("Alice").is_some());
        assert!(norm_public_key(&"ab".repeat(32)).is_some() && norm_public_key("xyz").is_none());
    }
}
