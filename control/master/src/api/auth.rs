//! Identity accounts (Ed25519 challenge–response) and master sessions.

use std::{
    net::{IpAddr, SocketAddr},
    time::Instant,
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
use wavry_rift::identity::WavryId;

use super::{ApiError, ApiResult, AppState, CHALLENGE_TTL, St, bad, parse_json};

/// Master session (identity login) lifetime.
const SESSION_TTL_SECS: i64 = 24 * 3600;

impl AppState {
    /// Resolves a master session token to its (non-revoked) Wavry ID.
    pub(crate) async fn session_identity(&self, token: &str) -> ApiResult<Option<String>> {
        if !wavry_control_core::token_syntax_ok(token) {
            return Ok(None);
        }
        let row = sqlx::query(
            "SELECT wavry_id FROM master_sessions WHERE token_hash = $1 AND expires_at > $2",
        )
        .bind(hash_token(token))
        .bind(unix_now())
        .fetch_optional(&self.db)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let id: String = row.try_get(0)?;
        if self
            .revoked
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .contains(&id)
        {
            return Ok(None);
        }
        Ok(Some(id))
    }
}

fn challenge_message(purpose: &str, wavry_id: &str, nonce: &str) -> String {
    format!("wavry-master-auth-v1\n{purpose}\n{wavry_id}\n{nonce}")
}

fn new_challenge(
    st: &AppState,
    purpose: &'static str,
    wavry_id: &str,
    display_name: String,
) -> ApiResult<Value> {
    let nonce = new_token().map_err(|_| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "rng"))?;
    st.challenges
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .insert(
            nonce.clone(),
            purpose,
            wavry_id.to_owned(),
            display_name,
            Instant::now(),
        );
    Ok(json!({
        "challenge_id": nonce,
        "challenge": nonce,
        "message": challenge_message(purpose, wavry_id, &nonce),
        "expires_in_secs": CHALLENGE_TTL.as_secs(),
    }))
}

fn take_and_verify(
    st: &AppState,
    purpose: &str,
    wid: &WavryId,
    challenge_id: Option<&str>,
    signature_hex: &str,
) -> ApiResult<String> {
    let id = wid.to_string();
    let unauthorized = || ApiError::new(StatusCode::UNAUTHORIZED, "challenge failed");
    let challenge_id = challenge_id
        .map(str::trim)
        .ok_or_else(|| bad("challenge_id required"))?;
    let ch = st
        .challenges
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .take(challenge_id, purpose, &id, Instant::now())
        .ok_or_else(unauthorized)?;
    let sig = hex::decode(signature_hex.trim()).map_err(|_| unauthorized())?;
    wid.verify(
        challenge_message(purpose, &id, challenge_id).as_bytes(),
        &sig,
    )
    .map_err(|_| unauthorized())?;
    Ok(ch.display_name)
}

async fn create_session(st: &AppState, wavry_id: &str) -> ApiResult<(String, i64)> {
    let token = new_token().map_err(|_| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "rng"))?;
    let now = unix_now();
    let expires = now + SESSION_TTL_SECS;
    sqlx::query("INSERT INTO master_sessions (token_hash, wavry_id, expires_at, created_at) VALUES ($1, $2, $3, $4)")
        .bind(hash_token(&token))
        .bind(wavry_id)
        .bind(expires)
        .bind(now)
        .execute(&st.db)
        .await?;
    Ok((token, expires))
}

#[derive(Deserialize)]
struct AuthReq {
    wavry_id: String,
    #[serde(default)]
    display_name: Option<String>,
    #[serde(default)]
    signature_hex: Option<String>,
    /// The `challenge_id` returned with the challenge (step 2).
    #[serde(default)]
    challenge_id: Option<String>,
}

fn auth_limit(
    st: &AppState,
    scope: &str,
    peer: SocketAddr,
    headers: &HeaderMap,
) -> ApiResult<IpAddr> {
    let ip = st.ip.resolve(peer, headers);
    if !st
        .auth_limiter
        .check(&format!("{scope}:{}", st.ip.rate_key(ip)))
    {
        st.metrics.rate_limited.inc();
        return Err(ApiError::new(StatusCode::TOO_MANY_REQUESTS, "rate limited"));
    }
    Ok(ip)
}

async fn identity_exists(st: &AppState, id: &str) -> ApiResult<bool> {
    Ok(sqlx::query("SELECT 1 FROM identities WHERE wavry_id = $1")
        .bind(id)
        .fetch_optional(&st.db)
        .await?
        .is_some())
}

pub(super) async fn auth_register(
    State(st): State<St>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    auth_limit(&st, "register", peer, &headers)?;
    let req: AuthReq = parse_json(&body)?;
    let wid: WavryId = req
        .wavry_id
        .trim()
        .parse()
        .map_err(|_| bad("invalid wavry_id"))?;
    let name = req.display_name.unwrap_or_default().trim().to_owned();
    if name.is_empty() || name.chars().count() > 64 || name.chars().any(char::is_control) {
        return Err(bad(
            "display_name must be 1..64 characters without control characters",
        ));
    }
    if identity_exists(&st, &wid.to_string()).await? {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "identity already registered",
        ));
    }
    new_challenge(&st, "register", &wid.to_string(), name).map(Json)
}

pub(super) async fn auth_register_verify(
    State(st): State<St>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    auth_limit(&st, "register_verify", peer, &headers)?;
    let req: AuthReq = parse_json(&body)?;
    let wid: WavryId = req
        .wavry_id
        .trim()
        .parse()
        .map_err(|_| bad("invalid wavry_id"))?;
    let sig = req
        .signature_hex
        .ok_or_else(|| bad("signature_hex required"))?;
    let display_name = take_and_verify(&st, "register", &wid, req.challenge_id.as_deref(), &sig)?;
    let id = wid.to_string();
    let inserted = sqlx::query("INSERT INTO identities (wavry_id, display_name, created_at) VALUES ($1, $2, $3) ON CONFLICT (wavry_id) DO NOTHING")
        .bind(&id)
        .bind(&display_name)
        .bind(unix_now())
        .execute(&st.db)
        .await?
        .rows_affected();
    if inserted == 0 {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "identity already registered",
        ));
    }
    let (token, expires_at) = create_session(&st, &id).await?;
    st.metrics.register_success.inc();
    tracing::info!(wavry_id = %id, "identity registered");
    Ok((StatusCode::CREATED, Json(json!({ "wavry_id": id, "display_name": display_name, "token": token, "expires_at": expires_at })))
        .into_response())
}

pub(super) async fn auth_login(
    State(st): State<St>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    auth_limit(&st, "login", peer, &headers)?;
    let req: AuthReq = parse_json(&body)?;
    let wid: WavryId = req
        .wavry_id
        .trim()
        .parse()
        .map_err(|_| bad("invalid wavry_id"))?;
    let id = wid.to_string();
    let Some(sig) = req.signature_hex else {
        // Step 1: a challenge (issued for unknown identities too, so existence is not revealed).
        return new_challenge(&st, "login", &id, String::new()).map(Json);
    };
    st.metrics.login_attempts.inc();
    take_and_verify(&st, "login", &wid, req.challenge_id.as_deref(), &sig)?;
    if !identity_exists(&st, &id).await? {
        return Err(ApiError::new(StatusCode::UNAUTHORIZED, "challenge failed"));
    }
    if st
        .revoked
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .contains(&id)
    {
        return Err(ApiError::new(StatusCode::FORBIDDEN, "identity revoked"));
    }
    let (token, expires_at) = create_session(&st, &id).await?;
    st.metrics.login_success.inc();
    Ok(Json(
        json!({ "wavry_id": id, "token": token, "expires_at": expires_at }),
    ))
}
