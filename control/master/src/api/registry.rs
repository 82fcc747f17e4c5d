//! Shared relay registry: write-through to the database and periodic merge, so masters
//! sharing a database see each other's relays.

use std::{
    collections::HashSet,
    time::{Duration, Instant},
};

use serde_json::Value;
use sqlx::Row;
use wavry_control_core::{Pool, env_u64};

use super::{AppState, St};
use crate::relays::{self, Relay, RelayState};

pub(super) fn now_ms() -> i64 {
    i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis()),
    )
    .unwrap_or(i64::MAX)
}

fn state_name(s: RelayState) -> String {
    serde_json::to_value(s)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

fn instant_from_ms(ms: i64) -> Instant {
    let age = u64::try_from(now_ms().saturating_sub(ms)).unwrap_or(0);
    Instant::now()
        .checked_sub(Duration::from_millis(age))
        .unwrap_or_else(Instant::now)
}

fn ms_from_instant(t: Instant) -> i64 {
    now_ms() - i64::try_from(t.elapsed().as_millis()).unwrap_or(0)
}

pub(super) async fn persist_relay(db: &Pool, r: &Relay) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO relays (relay_id, endpoints, region, asn, max_sessions, max_bitrate_kbps, load_pct, state, last_seen_ms, heartbeats, identity, heartbeat_token_hash, updated_ms) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) \
         ON CONFLICT (relay_id) DO UPDATE SET endpoints = $2, region = $3, asn = $4, max_sessions = $5, max_bitrate_kbps = $6, load_pct = $7, \
         state = $8, last_seen_ms = $9, heartbeats = $10, identity = $11, heartbeat_token_hash = $12, updated_ms = $13",
    )
    .bind(&r.id)
    .bind(serde_json::to_string(&r.endpoints).unwrap_or_default())
    .bind(r.region.as_deref())
    .bind(r.asn.map(i64::from))
    .bind(r.max_sessions.map(i64::from))
    .bind(i64::from(r.max_bitrate_kbps))
    .bind(r.load_pct)
    .bind(state_name(r.state))
    .bind(ms_from_instant(r.last_seen))
    .bind(i64::from(r.heartbeats))
    .bind(r.identity.as_deref())
    .bind(&r.heartbeat_token_hash)
    .bind(r.updated_ms)
    .execute(db)
    .await?;
    Ok(())
}

async fn load_relays(db: &Pool) -> Result<Vec<Relay>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT relay_id, endpoints, region, asn, max_sessions, max_bitrate_kbps, load_pct, state, last_seen_ms, heartbeats, identity, heartbeat_token_hash, updated_ms FROM relays",
    )
    .fetch_all(db)
    .await?;
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        let endpoints: Vec<String> =
            serde_json::from_str(&row.try_get::<String, _>(1)?).unwrap_or_default();
        let Some(ip) = endpoints
            .first()
            .and_then(|e| relays::parse_endpoint(e))
            .map(|a| a.ip())
        else {
            continue;
        };
        let state_text: String = row.try_get(7)?;
        let Ok(state) = serde_json::from_value::<RelayState>(Value::String(state_text)) else {
            continue;
        };
        out.push(Relay {
            id: row.try_get(0)?,
            endpoints,
            ip,
            region: row.try_get(2)?,
            asn: row
                .try_get::<Option<i64>, _>(3)?
                .and_then(|v| u32::try_from(v).ok()),
            max_sessions: row
                .try_get::<Option<i64>, _>(4)?
                .and_then(|v| u32::try_from(v).ok()),
            max_bitrate_kbps: u32::try_from(row.try_get::<i64, _>(5)?).unwrap_or(10_000),
            load_pct: row.try_get(6)?,
            state,
            last_seen: instant_from_ms(row.try_get(8)?),
            heartbeats: u32::try_from(row.try_get::<i64, _>(9)?).unwrap_or(0),
            identity: row.try_get(10)?,
            heartbeat_token_hash: row.try_get(11)?,
            updated_ms: row.try_get(12)?,
        });
    }
    Ok(out)
}

/// Merges the shared table into memory: the newer `updated_ms` wins; entries missing from
/// the table for more than 10 s (removed by another master's sweeper) are dropped.
pub(super) async fn merge_registry(st: &AppState) -> Result<(), sqlx::Error> {
    let rows = load_relays(&st.db).await?;
    let now = now_ms();
    let mut relays = st
        .relays
        .write()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let ids: HashSet<String> = rows.iter().map(|r| r.id.clone()).collect();
    for row in rows {
        match relays.get(&row.id) {
            Some(mem) if mem.updated_ms >= row.updated_ms => {}
            _ => {
                relays.insert(row.id.clone(), row);
            }
        }
    }
    relays.retain(|id, r| ids.contains(id) || now - r.updated_ms < 10_000);
    Ok(())
}

pub(super) async fn registry_sync(st: St) {
    let mut tick = tokio::time::interval(Duration::from_millis(
        env_u64("WAVRY_MASTER_REGISTRY_SYNC_MS", 2000).max(100),
    ));
    loop {
        tick.tick().await;
        if let Err(e) = merge_registry(&st).await {
            tracing::warn!(error = %e, "relay registry sync failed");
        }
    }
}
