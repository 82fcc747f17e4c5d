//! Periodic housekeeping: stale relays, issued sessions, challenges, nonces, limiters,
//! revocations and expired sessions.

use std::{
    collections::HashSet,
    time::{Duration, Instant},
};

use sqlx::Row;
use wavry_control_core::{Pool, env_u64, unix_now};

use super::{
    St,
    registry::{now_ms, persist_relay},
};
use crate::relays::{self, RelayState};

/// How long a relay registration nonce is remembered (proofs are valid ±60 s).
const RELAY_NONCE_TTL_SECS: i64 = 300;

pub(super) async fn load_revoked(db: &Pool) -> Result<HashSet<String>, sqlx::Error> {
    let rows = sqlx::query("SELECT subject FROM revoked_identities")
        .fetch_all(db)
        .await?;
    rows.iter().map(|r| r.try_get::<String, _>(0)).collect()
}

pub(super) async fn sweeper(st: St) {
    let mut tick = tokio::time::interval(Duration::from_secs(
        env_u64("WAVRY_MASTER_SWEEP_SECS", 10).max(1),
    ));
    loop {
        tick.tick().await;
        let now = Instant::now();
        let mut removed = Vec::new();
        let mut changed = Vec::new();
        {
            let mut relays = st
                .relays
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            relays.retain(|id, r| {
                let age = now.duration_since(r.last_seen);
                if age > relays::REMOVE_AFTER {
                    tracing::info!(relay_id = %id, "relay removed after missing heartbeats");
                    removed.push(id.clone());
                    return false;
                }
                if age > relays::STALE_AFTER
                    && !matches!(
                        r.state,
                        RelayState::Draining | RelayState::Banned | RelayState::Quarantined
                    )
                {
                    tracing::warn!(relay_id = %id, "relay quarantined after missing heartbeats");
                    r.state = RelayState::Quarantined;
                    r.updated_ms = now_ms();
                    changed.push(r.clone());
                }
                true
            });
        }
        for id in removed {
            let _ = sqlx::query("DELETE FROM relays WHERE relay_id = $1")
                .bind(id)
                .execute(&st.db)
                .await;
        }
        for r in changed {
            let _ = persist_relay(&st.db, &r).await;
        }
        let horizon = Duration::from_secs(u64::try_from(st.lease_ttl).unwrap_or(900) + 3600);
        st.issued
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .retain(|_, i| now.duration_since(i.at) < horizon);
        st.challenges
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .purge(now);
        let _ = sqlx::query("DELETE FROM relay_nonces WHERE created_at < $1")
            .bind(unix_now() - RELAY_NONCE_TTL_SECS)
            .execute(&st.db)
            .await;
        for l in [
            &st.lease_limiter,
            &st.auth_limiter,
            &st.admin_limiter,
            &st.relay_limiter,
            &st.bind_limiter,
        ] {
            l.purge();
        }
        // Other masters sharing the database may have revoked identities.
        if let Ok(set) = load_revoked(&st.db).await {
            *st.revoked
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = set;
        }
        let _ = sqlx::query("DELETE FROM master_sessions WHERE expires_at <= $1")
            .bind(unix_now())
            .execute(&st.db)
            .await;
    }
}
