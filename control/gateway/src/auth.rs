//! Accounts: registration, login with lockouts and 2FA, logout, TOTP setup/enable.

use std::net::{IpAddr, SocketAddr};

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
    password::{hash_password, verify_password},
    throttle::{self, Reservation},
    totp,
};

/// Session lifetime.
const SESSION_TTL_SECS: i64 = 24 * 3600;

/// Verifies on the argon2 pool; `None` when the pool is busy (not a wrong password).
async fn verify_blocking(st: &AppState, pw: String, phc: String) -> Option<bool> {
    st.hash_pool.run(move || verify_password(&pw, &phc)).await
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

async fn user_by_username(st: &AppState, username: &str) -> ApiResult<Option<UserRow>> {
    let row = sqlx::query(&format!(
        "SELECT {USER_COLS} FROM users WHERE username = $1"
    ))
    .bind(username)
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
    if st
        .auth_limiter
        .check(&format!("{scope}:{}", st.ip.rate_key(ip)))
    {
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
    /// From `/auth/register/challenge`.
    #[serde(default)]
    challenge: Option<String>,
    /// Hex Ed25519 signature by `public_key` over
    /// `"wavry-gateway-register-v1\n{wavry_id}\n{challenge}"`.
    #[serde(default)]
    signature: Option<String>,
}

#[derive(Deserialize)]
pub(crate) struct ChallengeReq {
    public_key: String,
}

/// `POST /auth/register/challenge`: a challenge the registering key must sign (proof of
/// possession; stateless, good for 5 minutes on any gateway sharing the at-rest key).
pub(crate) async fn register_challenge(
    State(st): State<St>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    let ip = client_ip(&st, peer, &headers);
    limit(&st, "register_challenge", ip)?;
    let req: ChallengeReq = parse_json(&body)?;
    let wid = crate::proof::parse_public_key(&req.public_key).ok_or_else(|| {
        invalid(
            &st,
            "public_key must be 64 hex characters or a Wavry ID (32-byte Ed25519 key)",
        )
    })?;
    let challenge = crate::proof::new_challenge(&st.totp_key, &wid, unix_now())
        .map_err(|_| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "challenge failed"))?;
    Ok(Json(json!({
        "wavry_id": wid.to_string(),
        "message": crate::proof::message(&wid, &challenge),
        "challenge": challenge,
        "expires_in_secs": crate::proof::CHALLENGE_TTL_SECS,
    })))
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
    let wid = crate::proof::parse_public_key(&req.public_key).ok_or_else(|| {
        invalid(
            &st,
            "public_key must be 64 hex characters or a Wavry ID (32-byte Ed25519 key)",
        )
    })?;
    let proven = match (req.challenge.as_deref(), req.signature.as_deref()) {
        (Some(c), Some(sig)) => crate::proof::verify(&st.totp_key, &wid, c, sig, unix_now()),
        _ => false,
    };
    if !proven {
        st.count(&st.metrics.auth_failures);
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "public_key not proven: sign the challenge from /auth/register/challenge",
        ));
    }
    let public_key = hex::encode(wid.as_bytes());
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

fn throttled(st: &AppState, retry_after: i64) -> ApiError {
    st.count(&st.metrics.rate_limited);
    tracing::warn!(
        event = "RateLimitExceeded",
        reason = "attempt_backoff",
        "attempt throttled"
    );
    ApiError(
        StatusCode::TOO_MANY_REQUESTS,
        "Too many failed attempts; try again later".into(),
        Some(json!({ "retry_after_secs": retry_after })),
    )
}

/// Reserves one attempt for `key` or answers 429 (per-address keys get the larger budget).
async fn reserve(st: &AppState, key: &str) -> ApiResult<()> {
    let free = if key.starts_with("ip:") {
        st.ip_free_attempts
    } else {
        throttle::FREE_ATTEMPTS
    };
    match throttle::reserve(&st.db, key, free, unix_now()).await? {
        Reservation::Granted => Ok(()),
        Reservation::Throttled(wait) => Err(throttled(st, wait)),
    }
}

fn busy(st: &AppState) -> ApiError {
    st.count(&st.metrics.hasher_busy);
    ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "server busy, retry")
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

/// A login names the account by `email` or by `username` (exactly one).
#[derive(Deserialize)]
pub(crate) struct LoginReq {
    #[serde(default)]
    email: Option<String>,
    #[serde(default)]
    username: Option<String>,
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
    if !(1..=128).contains(&req.password.len()) {
        return Err(invalid(&st, "invalid password"));
    }
    // Known and unknown accounts are counted and answered alike. A known account is counted
    // under its email whichever name the login gave, so both share one budget.
    let (user, account_key) = match (req.email.as_deref(), req.username.as_deref()) {
        (Some(e), None) => {
            let email = norm_email(e).ok_or_else(|| invalid(&st, "invalid email"))?;
            (user_by_email(&st, &email).await?, format!("email:{email}"))
        }
        (None, Some(u)) => {
            let name = norm_username(u).ok_or_else(|| invalid(&st, "invalid username"))?;
            let user = user_by_username(&st, &name).await?;
            let key = user.as_ref().map_or_else(
                || format!("username:{name}"),
                |u| format!("email:{}", u.email),
            );
            (user, key)
        }
        _ => return Err(invalid(&st, "give either email or username")),
    };
    let ip_key = format!("ip:{}", st.ip.rate_key(ip));
    let code = req
        .totp_code
        .as_deref()
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .map(str::to_owned);
    // The owner's valid current 2FA code lets the login past the account's backoff, so
    // someone else's guesses never lock the owner out (the IP's backoff still applies).
    let owner_code_ok = match (&user, code.as_deref()) {
        (Some(u), Some(c)) => u.totp_secret.as_ref().is_some_and(|stored| {
            st.totp_key.open(&u.id, stored).is_ok_and(|secret| {
                totp::code_well_formed(c)
                    && totp::check(
                        &secret,
                        c,
                        u64::try_from(unix_now()).unwrap_or(0),
                        u.totp_last_step,
                    )
                    .is_some()
            })
        }),
        _ => false,
    };
    reserve(&st, &ip_key).await?;
    if !owner_code_ok {
        if let Err(e) = reserve(&st, &account_key).await {
            throttle::refund(&st.db, &ip_key).await?;
            return Err(e);
        }
    }
    // Same work for unknown emails, so timing does not reveal which exist.
    let phc = user
        .as_ref()
        .map_or_else(|| st.dummy_hash.clone(), |u| u.password_hash.clone());
    let Some(password_ok) = verify_blocking(&st, req.password, phc).await else {
        // A busy hasher is not a wrong password: nothing is counted.
        throttle::refund(&st.db, &ip_key).await?;
        if !owner_code_ok {
            throttle::refund(&st.db, &account_key).await?;
        }
        tracing::warn!(event = "HasherBusy", "login refused: argon2 pool busy");
        return Err(busy(&st));
    };
    let Some(user) = user.filter(|_| password_ok) else {
        st.count(&st.metrics.auth_failures);
        tracing::info!(
            event = "LoginFailure",
            reason = "InvalidCredentials",
            "login failed"
        );
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "Invalid credentials",
        ));
    };
    // The password was right: this actor's own attempt is handed back.
    throttle::clear(&st.db, &account_key).await?;
    throttle::refund(&st.db, &ip_key).await?;
    if let Some(reason) = active_ban(&st, &user.id).await? {
        tracing::info!(event = "AccountSuspended", user_id = %user.id, "login refused: banned");
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!("Account suspended: {reason}"),
        ));
    }
    if let Some(stored) = &user.totp_secret {
        let Some(code) = code else {
            tracing::info!(event = "LoginFailure", reason = "TotpRequired", user_id = %user.id, "2FA code required");
            return Err(ApiError(
                StatusCode::UNAUTHORIZED,
                "2FA required".into(),
                Some(json!({ "totp_required": true })),
            ));
        };
        // Codes are guesses too: counted per account and per IP.
        let totp_key = format!("totp:{}", user.id);
        reserve(&st, &totp_key).await?;
        let secret = st.totp_key.open(&user.id, stored).map_err(|e| {
            tracing::error!(error = %e, user_id = %user.id, "cannot decrypt TOTP secret");
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "2FA unavailable")
        })?;
        if !consume_code(&st, &user, &secret, &code).await? {
            st.count(&st.metrics.auth_failures);
            tracing::info!(event = "LoginFailure", reason = "InvalidTotp", user_id = %user.id, "login failed");
            return Err(ApiError::new(StatusCode::UNAUTHORIZED, "Invalid 2FA code"));
        }
        throttle::clear(&st.db, &totp_key).await?;
    }
    let (token, exp, created) = create_session(&st, &user.id, ip).await?;
    st.count(&st.metrics.login_success);
    tracing::info!(event = "LoginSuccess", user_id = %user.id, "login");
    Ok(Json(auth_response(&user, &token, exp, created, ip)))
}

/// Checks `code` against the user's secret and consumes its step with a compare-and-set, so
/// a code works once even for concurrent requests and the step never moves backwards.
async fn consume_code(st: &AppState, u: &UserRow, secret: &str, code: &str) -> ApiResult<bool> {
    if !totp::code_well_formed(code) {
        return Ok(false);
    }
    let Some(step) = totp::check(
        secret,
        code,
        u64::try_from(unix_now()).unwrap_or(0),
        u.totp_last_step,
    ) else {
        return Ok(false);
    };
    let used =
        sqlx::query("UPDATE users SET totp_last_step = $1 WHERE id = $2 AND totp_last_step < $1")
            .bind(step)
            .bind(&u.id)
            .execute(&st.db)
            .await?
            .rows_affected();
    Ok(used == 1)
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
    if !st
        .post_auth_limiter
        .check(&format!("logout:{}:{h}", st.ip.rate_key(ip)))
    {
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

/// Re-authentication for a 2FA change, counted per account (`totp:{user}`): with 2FA on, a
/// valid current code (its step consumed atomically when `consume`); with 2FA off, the
/// account password.
async fn reauthenticate(
    st: &AppState,
    u: &UserRow,
    code: Option<&str>,
    password: Option<String>,
    consume: bool,
) -> ApiResult<()> {
    let key = format!("totp:{}", u.id);
    reserve(st, &key).await?;
    let ok = if let Some(stored) = &u.totp_secret {
        let secret = st
            .totp_key
            .open(&u.id, stored)
            .map_err(|_| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "2FA unavailable"))?;
        let code = code.map(str::trim).unwrap_or_default();
        if consume {
            consume_code(st, u, &secret, code).await?
        } else {
            totp::code_well_formed(code)
                && totp::check(
                    &secret,
                    code,
                    u64::try_from(unix_now()).unwrap_or(0),
                    u.totp_last_step,
                )
                .is_some()
        }
    } else if let Some(pw) = password.filter(|p| (1..=128).contains(&p.len())) {
        let Some(ok) = verify_blocking(st, pw, u.password_hash.clone()).await else {
            throttle::refund(&st.db, &key).await?;
            return Err(busy(st));
        };
        ok
    } else {
        false
    };
    if !ok {
        st.count(&st.metrics.auth_failures);
        tracing::info!(event = "ReauthFailure", user_id = %u.id, "2FA change: re-authentication failed");
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            if u.totp_secret.is_some() {
                "current 2FA code required"
            } else {
                "password required"
            },
        ));
    }
    throttle::refund(&st.db, &key).await?;
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
    // Only checked here (and counted), consumed at enable: setup stores nothing.
    if u.totp_secret.is_some() {
        reauthenticate(&st, &u, req.totp_code.as_deref(), None, false).await?;
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
    /// Required to replace an enabled 2FA.
    #[serde(default)]
    existing_totp_code: Option<String>,
    /// Required to enable 2FA on an account without it.
    #[serde(default)]
    password: Option<String>,
}

/// `POST /auth/2fa/enable` (session token plus the password, or the current code when 2FA is
/// already on): stores the encrypted secret after a valid code, revokes every other session
/// and returns a new one.
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
    reauthenticate(
        &st,
        &u,
        req.existing_totp_code.as_deref(),
        req.password,
        true,
    )
    .await?;
    let now = u64::try_from(unix_now()).unwrap_or(0);
    let step = totp::check(&req.secret, req.code.trim(), now, 0)
        .ok_or_else(|| invalid(&st, "invalid 2FA code for this secret"))?;
    let sealed = st
        .totp_key
        .seal(&u.id, &req.secret.trim().to_ascii_uppercase())
        .map_err(|_| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "encryption failed"))?;
    // Compare-and-set on the secret this request re-authenticated against (one change per
    // proof, even in parallel); the step only moves forwards, so a code consumed by a
    // concurrent request stays consumed.
    let changed = sqlx::query(
        "UPDATE users SET totp_secret = $1, totp_last_step = CASE WHEN totp_last_step > $2 THEN totp_last_step ELSE $2 END \
         WHERE id = $3 AND COALESCE(totp_secret, '') = $4",
    )
    .bind(&sealed)
    .bind(step)
    .bind(&u.id)
    .bind(u.totp_secret.clone().unwrap_or_default())
    .execute(&st.db)
    .await?
    .rows_affected();
    if changed == 0 {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "2FA was changed by another request",
        ));
    }
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
    fn validation_rules() {
        assert_eq!(norm_email(" A@B.co ").as_deref(), Some("a@b.co"));
        for bad in ["a@b", "@b.co", "a@.b.co", "a@b.co.", "a b@c.de", "a@@b.co"] {
            assert!(norm_email(bad).is_none(), "{bad}");
        }
        assert_eq!(norm_username(" Alice_1 ").as_deref(), Some("alice_1"));
        assert!(norm_username("ab").is_none() && norm_username("a b c").is_none());
        assert!(norm_display_name("x\u{7}").is_none() && norm_display_name("Alice").is_some());
        let parse = crate::proof::parse_public_key;
        assert!(parse(&"ab".repeat(32)).is_some() && parse("xyz").is_none());
        assert!(parse(&"ab".repeat(64)).is_none(), "only 32-byte keys");
    }
}
