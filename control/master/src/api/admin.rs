//! Admin routes: identity revocation and relay state changes, audited.

use std::net::{IpAddr, SocketAddr};

use axum::{
    Json,
    body::Bytes,
    extract::{ConnectInfo, State},
    http::{HeaderMap, StatusCode},
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use wavry_control_core::unix_now;
use wavry_rift::identity::WavryId;

use super::{
    ApiError, ApiResult, AppState, St, bad,
    leases::valid_sub,
    parse_json,
    registry::{now_ms, persist_relay},
};
use crate::relays::RelayState;

fn admin_guard(st: &AppState, peer: SocketAddr, headers: &HeaderMap) -> ApiResult<IpAddr> {
    let ip = st.ip.resolve(peer, headers);
    if !st
        .admin_limiter
        .check(&format!("admin:{}", st.ip.rate_key(ip)))
    {
        st.metrics.rate_limited.inc();
        return Err(ApiError::new(StatusCode::TOO_MANY_REQUESTS, "rate limited"));
    }
    st.admin
        .check(headers)
        .map(|()| ip)
        .map_err(|r| ApiError::new(StatusCode::UNAUTHORIZED, r.message(ip)))
}

async fn audit(
    st: &AppState,
    action: &str,
    target_type: &str,
    target: &str,
    outcome: &str,
    ip: IpAddr,
    details: Option<String>,
) -> ApiResult<()> {
    let entry = wavry_control_core::AuditEntry {
        action,
        target_type,
        target,
        outcome,
        ip,
        details: details.as_deref(),
    };
    wavry_control_core::write_audit(&st.db, entry).await?;
    Ok(())
}

#[derive(Deserialize)]
struct RevokeReq {
    #[serde(default)]
    wavry_id: Option<String>,
    /// A gateway username (lease `sub`) instead of a Wavry ID.
    #[serde(default)]
    sub: Option<String>,
    #[serde(default)]
    reason: Option<String>,
}

pub(super) async fn admin_revoke(
    State(st): State<St>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    let ip = admin_guard(&st, peer, &headers)?;
    let req: RevokeReq = parse_json(&body)?;
    let subject = match (req.wavry_id, req.sub) {
        (Some(w), _) => w
            .trim()
            .parse::<WavryId>()
            .map_err(|_| bad("invalid wavry_id"))?
            .to_string(),
        (None, Some(s)) if valid_sub(s.trim()) => s.trim().to_owned(),
        _ => return Err(bad("wavry_id or sub required")),
    };
    sqlx::query("INSERT INTO revoked_identities (subject, reason, revoked_at) VALUES ($1, $2, $3) ON CONFLICT (subject) DO UPDATE SET reason = $2, revoked_at = $3")
        .bind(&subject)
        .bind(req.reason.as_deref())
        .bind(unix_now())
        .execute(&st.db)
        .await?;
    let sessions = sqlx::query("DELETE FROM master_sessions WHERE wavry_id = $1")
        .bind(&subject)
        .execute(&st.db)
        .await?
        .rows_affected();
    st.revoked
        .write()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .insert(subject.clone());
    let kicked = st.hub.kick(&subject, "identity revoked");
    audit(
        &st,
        "revoke_identity",
        "identity",
        &subject,
        "success",
        ip,
        req.reason,
    )
    .await?;
    Ok(Json(
        json!({ "revoked": true, "banned": true, "sessions_revoked": sessions, "connections_closed": kicked }),
    ))
}

#[derive(Deserialize, Serialize)]
struct UpdateStateReq {
    relay_id: String,
    new_state: RelayState,
}

pub(super) async fn admin_update_state(
    State(st): State<St>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    let ip = admin_guard(&st, peer, &headers)?;
    let req: UpdateStateReq = parse_json(&body)?;
    let found = {
        let mut relays = st
            .relays
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        relays.get_mut(&req.relay_id).map(|r| {
            r.state = req.new_state;
            r.updated_ms = now_ms();
            r.clone()
        })
    };
    if let Some(r) = &found {
        persist_relay(&st.db, r).await?;
    }
    let found = found.is_some();
    audit(
        &st,
        "update_relay_state",
        "relay",
        &req.relay_id,
        if found { "success" } else { "not_found" },
        ip,
        Some(format!("{:?}", req.new_state)),
    )
    .await?;
    if !found {
        return Err(ApiError::new(StatusCode::NOT_FOUND, "unknown relay"));
    }
    Ok(Json(
        json!({ "ok": true, "relay_id": req.relay_id, "state": req.new_state }),
    ))
}
