//! Relay routes: registration (bearer token or signed identity proof), heartbeats, listing.

use std::{net::SocketAddr, time::Instant};

use axum::{
    Json,
    body::Bytes,
    extract::{ConnectInfo, State},
    http::{HeaderMap, StatusCode},
};
use serde::Deserialize;
use serde_json::{Value, json};
use wavry_control_core::{ct_eq, hash_token, new_token, unix_now};
use wavry_rift::identity::WavryId;

use super::{
    ApiError, ApiResult, AppState, St, bad, bearer, parse_json,
    registry::{now_ms, persist_relay},
    token_matches,
};
use crate::relays::{self, Relay, RelayState};

#[derive(Deserialize)]
struct RegisterReq {
    relay_id: String,
    endpoints: Vec<String>,
    #[serde(default)]
    region: Option<String>,
    #[serde(default)]
    asn: Option<u32>,
    #[serde(default)]
    max_sessions: Option<u32>,
    #[serde(default)]
    max_bitrate_kbps: Option<u32>,
    #[serde(default)]
    #[allow(dead_code)]
    features: Vec<String>,
    /// Relay identity proof (v2): the relay's Wavry ID, a Unix timestamp (±60 s) and a
    /// one-time nonce in the body, and an Ed25519 signature (hex) over
    /// `"wavry-relay-register-v2\n"` followed by the exact request body bytes in the
    /// `X-Wavry-Relay-Signature` header.
    #[serde(default)]
    wavry_id: Option<String>,
    #[serde(default)]
    timestamp: Option<i64>,
    #[serde(default)]
    nonce: Option<String>,
    /// The v1 proof (relay id and timestamp only, replayable): refused.
    #[serde(default)]
    signature: Option<String>,
}

/// Header carrying the relay's signature over the whole registration request.
const RELAY_SIGNATURE_HEADER: &str = "x-wavry-relay-signature";
/// Domain separation prefix of the relay registration signature.
const RELAY_REGISTER_V2: &[u8] = b"wavry-relay-register-v2\n";

fn nonce_ok(n: &str) -> bool {
    (16..=128).contains(&n.len())
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Checks a relay identity proof over the whole request and consumes its nonce (once per
/// relay identity across every master on the database). `Ok(None)` when no proof is given.
async fn verify_relay_identity(
    st: &AppState,
    req: &RegisterReq,
    headers: &HeaderMap,
    body: &[u8],
) -> ApiResult<Option<String>> {
    let sig = headers
        .get(RELAY_SIGNATURE_HEADER)
        .and_then(|v| v.to_str().ok());
    let unauthorized = |m: &str| ApiError::new(StatusCode::UNAUTHORIZED, m);
    let Some(sig) = sig else {
        if req.signature.is_some() {
            // The v1 proof is replayable: it proves nothing (the bearer token may still do).
            tracing::warn!(relay_id = %req.relay_id, "relay sent a v1 identity proof: ignored (sign the whole request, v2)");
        }
        return Ok(None);
    };
    let (Some(id), Some(ts), Some(nonce)) = (&req.wavry_id, req.timestamp, &req.nonce) else {
        return Err(bad(
            "a signed registration needs wavry_id, timestamp and nonce",
        ));
    };
    let wid: WavryId = id.parse().map_err(|_| bad("invalid wavry_id"))?;
    if !nonce_ok(nonce) {
        return Err(bad("nonce must be 16..128 characters of [A-Za-z0-9_-]"));
    }
    if (unix_now() - ts).abs() > 60 {
        return Err(unauthorized("relay identity proof expired"));
    }
    let sig = hex::decode(sig.trim()).map_err(|_| bad("signature is not hex"))?;
    let mut msg = Vec::with_capacity(RELAY_REGISTER_V2.len() + body.len());
    msg.extend_from_slice(RELAY_REGISTER_V2);
    msg.extend_from_slice(body);
    wid.verify(&msg, &sig)
        .map_err(|_| unauthorized("relay identity signature invalid"))?;
    let id = wid.to_string();
    let fresh = sqlx::query(
        "INSERT INTO relay_nonces (wavry_id, nonce, created_at) VALUES ($1, $2, $3) ON CONFLICT (wavry_id, nonce) DO NOTHING",
    )
    .bind(&id)
    .bind(nonce)
    .bind(unix_now())
    .execute(&st.db)
    .await?
    .rows_affected();
    if fresh == 0 {
        return Err(unauthorized("relay registration nonce already used"));
    }
    Ok(Some(id))
}

pub(super) async fn relay_register(
    State(st): State<St>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    let ip = st.ip.resolve(peer, &headers);
    if !st
        .relay_limiter
        .check(&format!("register:{}", st.ip.rate_key(ip)))
    {
        st.metrics.rate_limited.inc();
        return Err(ApiError::new(StatusCode::TOO_MANY_REQUESTS, "rate limited"));
    }
    let req: RegisterReq = parse_json(&body)?;
    let bearer_ok = token_matches(bearer(&headers), st.relay_token.as_ref());
    let identity = verify_relay_identity(&st, &req, &headers, &body).await?;
    let identity_ok = identity
        .as_ref()
        .is_some_and(|id| st.relay_allowed_ids.contains(id));
    if !(bearer_ok || identity_ok || st.insecure_dev) {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "relay not authorised (bearer token or allowed relay identity required)",
        ));
    }
    if req.relay_id.is_empty()
        || req.relay_id.len() > 64
        || !req
            .relay_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(bad("invalid relay_id"));
    }
    if req.endpoints.is_empty() || req.endpoints.len() > 8 {
        return Err(bad("endpoints must list 1..8 addresses"));
    }
    let mut endpoints = Vec::new();
    for e in &req.endpoints {
        let a = relays::parse_endpoint(e).ok_or_else(|| {
            bad(format!(
                "endpoint {e:?} is not a routable ip:port (unspecified addresses are refused)"
            ))
        })?;
        endpoints.push(a);
    }
    let max_bitrate = req.max_bitrate_kbps.unwrap_or(10_000);
    if max_bitrate < 10_000 {
        return Err(bad("max_bitrate_kbps must be >= 10000"));
    }
    let region = req.region.filter(|r| !r.is_empty() && r.len() <= 64);
    let heartbeat_token =
        new_token().map_err(|_| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "rng"))?;
    let registered = {
        let mut relays = st
            .relays
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let ip0 = endpoints[0].ip();
        if let Some(existing) = relays.get(&req.relay_id) {
            if existing.identity.is_some() && existing.identity != identity {
                return Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    "relay_id is bound to another relay identity",
                ));
            }
            if existing.state == RelayState::Banned {
                return Err(ApiError::new(StatusCode::FORBIDDEN, "relay banned"));
            }
        }
        let same_ip = relays
            .values()
            .filter(|r| r.id != req.relay_id && r.ip == ip0)
            .count();
        if same_ip >= st.max_relays_per_ip {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "too many relays registered from this address",
            ));
        }
        let state = relays.get(&req.relay_id).map_or(RelayState::New, |r| {
            if r.state == RelayState::Draining {
                RelayState::Draining
            } else {
                RelayState::New
            }
        });
        relays.insert(
            req.relay_id.clone(),
            Relay {
                id: req.relay_id.clone(),
                endpoints: endpoints.iter().map(ToString::to_string).collect(),
                ip: ip0,
                region,
                asn: req.asn,
                max_sessions: req.max_sessions,
                max_bitrate_kbps: max_bitrate,
                load_pct: 0.0,
                state,
                last_seen: Instant::now(),
                heartbeats: 0,
                identity: identity.clone(),
                heartbeat_token_hash: hash_token(&heartbeat_token),
                updated_ms: now_ms(),
            },
        );
        relays.get(&req.relay_id).cloned()
    };
    if let Some(r) = registered {
        persist_relay(&st.db, &r).await?;
    }
    st.metrics.relay_registrations.inc();
    tracing::info!(relay_id = %req.relay_id, endpoints = ?req.endpoints, authenticated_by = if bearer_ok { "bearer" } else if identity_ok { "identity" } else { "insecure-dev" }, "relay registered");
    Ok(Json(json!({
        "heartbeat_interval_ms": relays::HEARTBEAT_INTERVAL_MS,
        "master_public_key": st.signer.public_key().to_vec(),
        "master_public_key_hex": hex::encode(st.signer.public_key()),
        "master_key_id": st.signer.key_id(),
        "heartbeat_token": heartbeat_token,
    })))
}

#[derive(Deserialize)]
struct HeartbeatReq {
    relay_id: String,
    load_pct: f64,
}

pub(super) async fn relay_heartbeat(
    State(st): State<St>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    let req: HeartbeatReq = parse_json(&body)?;
    let presented = bearer(&headers);
    let global_ok = token_matches(presented, st.relay_token.as_ref());
    if req.relay_id.is_empty() || !(0.0..=100.0).contains(&req.load_pct) {
        if !global_ok && !st.insecure_dev {
            return Err(ApiError::new(StatusCode::UNAUTHORIZED, "unauthorised"));
        }
        return Err(bad("relay_id must be set and load_pct within 0..100"));
    }
    let rep = st
        .reps
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .get(&req.relay_id)
        .copied();
    let snapshot = {
        let mut relays = st
            .relays
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let Some(r) = relays.get_mut(&req.relay_id) else {
            if !global_ok && !st.insecure_dev {
                return Err(ApiError::new(StatusCode::UNAUTHORIZED, "unauthorised"));
            }
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "unknown relay (register again)",
            ));
        };
        let own_ok = presented
            .is_some_and(|p| ct_eq(hash_token(p).as_bytes(), r.heartbeat_token_hash.as_bytes()));
        if !(global_ok || own_ok || st.insecure_dev) {
            return Err(ApiError::new(StatusCode::UNAUTHORIZED, "unauthorised"));
        }
        relays::on_heartbeat(r, req.load_pct, rep.as_ref());
        r.updated_ms = now_ms();
        r.clone()
    };
    persist_relay(&st.db, &snapshot).await?;
    st.metrics.relay_heartbeats.inc();
    Ok(Json(json!({ "ok": true, "state": snapshot.state })))
}

pub(super) async fn relay_list(State(st): State<St>) -> Json<Value> {
    let now = Instant::now();
    let relays = st
        .relays
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut v: Vec<Value> = relays
        .values()
        .map(|r| {
            json!({
                "relay_id": r.id,
                "endpoints": r.endpoints,
                "region": r.region,
                "asn": r.asn,
                "load_pct": r.load_pct,
                "last_seen_ms_ago": u64::try_from(now.duration_since(r.last_seen).as_millis()).unwrap_or(u64::MAX),
                "max_bitrate_kbps": r.max_bitrate_kbps,
                "max_sessions": r.max_sessions,
                "state": r.state,
            })
        })
        .collect();
    v.sort_by(|a, b| a["relay_id"].as_str().cmp(&b["relay_id"].as_str()));
    Json(Value::Array(v))
}
