//! Cross-instance signalling over Postgres `LISTEN/NOTIFY`: several gateways sharing one
//! Postgres database deliver messages to users bound on another instance, and propagate
//! kicks (ban, logout, revoke, 2FA change, session replaced). Presence lives in
//! `ws_presence`; payloads over the NOTIFY limit travel through `signal_outbox`.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sqlx::Row;
use wavry_control_core::{Pool, unix_now};

use crate::app::AppState;

const CHANNEL: &str = "wavry_gateway";
/// Larger payloads go through `signal_outbox` (NOTIFY allows < 8000 bytes).
const INLINE_MAX: usize = 7000;
/// Presence rows not refreshed for this long belong to a dead instance.
const PRESENCE_TTL_SECS: i64 = 90;

/// One event on the bus.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub(crate) enum Event {
    /// Send `text` to `to` if bound here.
    Deliver { to: String, text: String },
    /// Like `Deliver`, payload stored in `signal_outbox`.
    DeliverRef { to: String, id: String },
    /// Close every socket of a user.
    KickUser { user_id: String, reason: String },
    /// Close sockets bound with a session.
    KickSession { hash: String, reason: String },
    /// `username` bound on another instance: drop the local socket.
    Replaced { username: String },
}

#[derive(Serialize, Deserialize)]
struct Note {
    origin: String,
    #[serde(flatten)]
    event: Event,
}

/// A peer bound somewhere in the cluster.
#[derive(Debug, Clone)]
pub(crate) struct RemotePeer {
    pub(crate) username: String,
    pub(crate) user_id: String,
    pub(crate) wavry_id: Option<String>,
}

/// The bus of one gateway instance.
pub(crate) struct Bus {
    db: Pool,
    instance: String,
    /// Whether the LISTEN connection is up (reported by `/health`).
    pub(crate) listening: std::sync::atomic::AtomicBool,
}

impl Bus {
    pub(crate) fn new(db: Pool) -> Self {
        Self {
            db,
            instance: uuid::Uuid::new_v4().to_string(),
            listening: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Publishes an event to the other instances.
    pub(crate) async fn publish(&self, event: Event) {
        let mut note = Note {
            origin: self.instance.clone(),
            event,
        };
        let mut text = serde_json::to_string(&note).unwrap_or_default();
        if text.len() > INLINE_MAX {
            if let Event::Deliver { to, text: payload } = &note.event {
                let id = uuid::Uuid::new_v4().to_string();
                let stored = sqlx::query(
                    "INSERT INTO signal_outbox (id, payload, created_at) VALUES ($1, $2, $3)",
                )
                .bind(&id)
                .bind(payload)
                .bind(unix_now())
                .execute(&self.db)
                .await;
                if let Err(e) = stored {
                    tracing::warn!(error = %e, "signal outbox insert failed");
                    return;
                }
                note.event = Event::DeliverRef { to: to.clone(), id };
                text = serde_json::to_string(&note).unwrap_or_default();
            }
        }
        if let Err(e) = sqlx::query("SELECT pg_notify($1, $2)")
            .bind(CHANNEL)
            .bind(&text)
            .execute(&self.db)
            .await
        {
            tracing::warn!(error = %e, "pg_notify failed");
        }
    }

    /// Records that `username` is bound on this instance.
    pub(crate) async fn present(
        &self,
        username: &str,
        user_id: &str,
        wavry_id: Option<&str>,
        conn: u64,
    ) {
        let r = sqlx::query(
            "INSERT INTO ws_presence (username, user_id, wavry_id, instance_id, conn_id, updated_at) VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (username) DO UPDATE SET user_id = $2, wavry_id = $3, instance_id = $4, conn_id = $5, updated_at = $6",
        )
        .bind(username)
        .bind(user_id)
        .bind(wavry_id)
        .bind(&self.instance)
        .bind(i64::try_from(conn).unwrap_or(i64::MAX))
        .bind(unix_now())
        .execute(&self.db)
        .await;
        if let Err(e) = r {
            tracing::warn!(error = %e, "presence update failed");
        }
        self.publish(Event::Replaced {
            username: username.to_owned(),
        })
        .await;
    }

    /// Clears this instance's presence row for `username` (if still ours).
    pub(crate) async fn absent(&self, username: &str, conn: u64) {
        let _ = sqlx::query(
            "DELETE FROM ws_presence WHERE username = $1 AND instance_id = $2 AND conn_id = $3",
        )
        .bind(username)
        .bind(&self.instance)
        .bind(i64::try_from(conn).unwrap_or(i64::MAX))
        .execute(&self.db)
        .await;
    }

    /// A peer bound on another instance, by username or Wavry ID.
    pub(crate) async fn lookup(&self, target: &str) -> Option<RemotePeer> {
        let row = sqlx::query(
            "SELECT username, user_id, wavry_id FROM ws_presence WHERE (username = $1 OR wavry_id = $2) AND instance_id <> $3 AND updated_at > $4",
        )
        .bind(target.trim().to_ascii_lowercase())
        .bind(target.trim())
        .bind(&self.instance)
        .bind(unix_now() - PRESENCE_TTL_SECS)
            .fetch_optional(&self.db)
            .await
            .ok()??;
        Some(RemotePeer {
            username: row.try_get(0).ok()?,
            user_id: row.try_get(1).ok()?,
            wavry_id: row.try_get(2).ok()?,
        })
    }

    /// Refreshes this instance's presence rows every 30 s (rows of dead instances expire).
    pub(crate) async fn refresh_presence(&self) {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(30));
        loop {
            tick.tick().await;
            let _ = sqlx::query("UPDATE ws_presence SET updated_at = $1 WHERE instance_id = $2")
                .bind(unix_now())
                .bind(&self.instance)
                .execute(&self.db)
                .await;
            let _ = sqlx::query("DELETE FROM ws_presence WHERE updated_at < $1")
                .bind(unix_now() - 10 * PRESENCE_TTL_SECS)
                .execute(&self.db)
                .await;
        }
    }

    /// Drops outbox rows nobody needs any more.
    pub(crate) async fn housekeeping(&self) {
        let _ = sqlx::query("DELETE FROM signal_outbox WHERE created_at < $1")
            .bind(unix_now() - 120)
            .execute(&self.db)
            .await;
    }
}

/// Listens for other instances' events and applies them to the local hub.
pub(crate) async fn listen(st: Arc<AppState>, url: String) {
    let refresher = st.clone();
    tokio::spawn(async move {
        if let Some(b) = &refresher.bus {
            b.refresh_presence().await;
        }
    });
    loop {
        match sqlx::postgres::PgListener::connect(&url).await {
            Ok(mut l) => {
                if let Err(e) = l.listen(CHANNEL).await {
                    tracing::warn!(error = %e, "LISTEN failed");
                } else {
                    tracing::info!(
                        "cross-instance signalling: listening on Postgres channel {CHANNEL}"
                    );
                    set_listening(&st, true);
                    loop {
                        match l.recv().await {
                            Ok(n) => apply(&st, n.payload()).await,
                            Err(e) => {
                                tracing::warn!(error = %e, "LISTEN connection lost");
                                set_listening(&st, false);
                                break;
                            }
                        }
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "LISTEN connect failed"),
        }
        // Reconnect back-off.
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
}

fn set_listening(st: &AppState, up: bool) {
    if let Some(b) = &st.bus {
        b.listening.store(up, std::sync::atomic::Ordering::Relaxed);
    }
}

async fn apply(st: &AppState, payload: &str) {
    let Some(bus) = &st.bus else { return };
    let Ok(note) = serde_json::from_str::<Note>(payload) else {
        return;
    };
    if note.origin == bus.instance {
        return;
    }
    match note.event {
        Event::Deliver { to, text } => {
            st.hub.send_local(&to, text);
        }
        Event::DeliverRef { to, id } => {
            let row = sqlx::query("SELECT payload FROM signal_outbox WHERE id = $1")
                .bind(&id)
                .fetch_optional(&st.db)
                .await;
            if let Ok(Some(r)) = row {
                if let Ok(text) = r.try_get::<String, _>(0) {
                    st.hub.send_local(&to, text);
                }
            }
        }
        Event::KickUser { user_id, reason } => {
            st.hub.kick_user(&user_id, &reason);
        }
        Event::KickSession { hash, reason } => {
            st.hub.kick_session(&hash, &reason);
        }
        Event::Replaced { username } => {
            st.hub
                .kick_username(&username, "Session replaced by a newer connection");
        }
    }
}
