//! Health, readiness, metrics and the master's public key (`/.well-known/wavry-id`).

use std::time::Instant;

use axum::{
    Json,
    extract::State,
    http::StatusCode,
    response::{IntoResponse, Response},
};
use serde_json::{Value, json};
use wavry_rift::identity::WavryId;

use super::{AppState, St};
use crate::{metrics::Snapshot, relays};

fn assignable_count(st: &AppState) -> usize {
    let now = Instant::now();
    st.relays
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .values()
        .filter(|r| r.state.assignable() && now.duration_since(r.last_seen) <= relays::STALE_AFTER)
        .count()
}

pub(super) async fn health(State(st): State<St>) -> Json<Value> {
    let assignable = assignable_count(&st);
    let registered = st
        .relays
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .len();
    let db_ok = wavry_control_core::db_ok(&st.db).await;
    Json(json!({
        "status": "ok",
        "ready": st.provisioned && assignable > 0 && db_ok,
        "uptime_secs": st.started.elapsed().as_secs(),
        "peers_connected": st.hub.len(),
        "relays_registered": registered,
        "relays_assignable": assignable,
        "signing_key_id": st.signer.key_id(),
        "provisioned_signing_key": st.provisioned,
        "lease_ttl_secs": st.lease_ttl,
        "database_ok": db_ok,
        "relay_auth": st.relay_token.is_some() || !st.relay_allowed_ids.is_empty(),
    }))
}

pub(super) async fn ready(State(st): State<St>) -> Response {
    let assignable = assignable_count(&st);
    let db_ok = wavry_control_core::db_ok(&st.db).await;
    let ready = st.provisioned && assignable > 0 && db_ok;
    let body = Json(json!({
        "ready": ready,
        "relays_assignable": assignable,
        "provisioned_signing_key": st.provisioned,
        "signing_key_id": st.signer.key_id(),
        "database_ok": db_ok,
    }));
    let code = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, body).into_response()
}

/// `/metrics`: OpenMetrics text.
pub(super) async fn metrics(State(st): State<St>) -> Response {
    let relays_registered = st
        .relays
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .len();
    st.metrics.respond(Snapshot {
        signalling_peers: st.hub.len(),
        relays_registered,
        relays_assignable: assignable_count(&st),
        uptime_secs: st.started.elapsed().as_secs(),
    })
}

pub(super) async fn well_known(State(st): State<St>) -> Json<Value> {
    let pk = st.signer.public_key();
    Json(json!({
        "public_key": hex::encode(pk),
        "wavry_id": WavryId::from_bytes(*pk).to_string(),
        "key_id": st.signer.key_id(),
        "version": "1.0",
    }))
}
