//! Master state and HTTP routes.

use std::{
    collections::{HashMap, HashSet},
    net::{IpAddr, SocketAddr},
    sync::{Arc, Mutex, RwLock},
    time::{Duration, Instant},
};

use anyhow::Context;
use axum::{
    Json, Router,
    body::Bytes,
    extract::{ConnectInfo, DefaultBodyLimit, State},
    http::{HeaderMap, HeaderValue, Method, StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use serde_json::{Value, json};
use sqlx::Row;
use time::OffsetDateTime;
use uuid::Uuid;
use wavry_control_core::{
    AdminAuth, ClientIpResolver, OriginPolicy, Pool, RateLimiter, ct_eq, env_flag, env_flag_or,
    env_list, env_str, env_u64, hash_token, new_token, unix_now,
};
use wavry_rift::{
    identity::WavryId,
    lease::{LeaseClaims, LeaseRole, LeaseSigner},
};
use wavry_signal::{
    Role,
    broker::{Credentials, LeaseGrant, LeaseRequest, PeerRef},
};

use crate::{
    Cli,
    challenges::Challenges,
    keys,
    relays::{self, Relay, RelayState, Reputation},
    ws,
};

const MIGRATIONS: &[wavry_control_core::MigrationSource] = &[
    (1, "init", include_str!("../migrations/0001_init.sql")),
    (2, "relays", include_str!("../migrations/0002_relays.sql")),
    (
        3,
        "relay_nonces",
        include_str!("../migrations/0003_relay_nonces.sql"),
    ),
];
/// Master session (identity login) lifetime.
const SESSION_TTL_SECS: i64 = 24 * 3600;
/// Challenge lifetime.
const CHALLENGE_TTL: Duration = Duration::from_secs(120);
/// Pending challenges kept at most (oldest evicted); `WAVRY_MASTER_MAX_CHALLENGES`.
const MAX_CHALLENGES: u64 = 50_000;
/// How long a relay registration nonce is remembered (proofs are valid ±60 s).
const RELAY_NONCE_TTL_SECS: i64 = 300;
const MAX_ISSUED: usize = 500_000;
/// Soft / hard bitrate limits placed in leases (kbit/s).
const LEASE_SOFT_KBPS: u32 = 50_000;
const LEASE_HARD_KBPS: u32 = 100_000;

/// A lease session issued by this master (kept to verify feedback).
#[derive(Debug, Clone)]
pub(crate) struct Issued {
    relay_id: String,
    participants: [PeerRef; 2],
    at: Instant,
}

/// Everything the handlers share.
pub(crate) struct AppState {
    pub(crate) db: Pool,
    signer: LeaseSigner,
    provisioned: bool,
    lease_ttl: i64,
    relay_token: Option<String>,
    relay_allowed_ids: HashSet<String>,
    insecure_dev: bool,
    service_token: Option<String>,
    admin: AdminAuth,
    pub(crate) ip: ClientIpResolver,
    pub(crate) origin: OriginPolicy,
    relays: RwLock<HashMap<String, Relay>>,
    reps: RwLock<HashMap<String, Reputation>>,
    revoked: RwLock<HashSet<String>>,
    issued: Mutex<HashMap<Uuid, Issued>>,
    challenges: Mutex<Challenges>,
    lease_limiter: RateLimiter,
    auth_limiter: RateLimiter,
    admin_limiter: RateLimiter,
    relay_limiter: RateLimiter,
    pub(crate) bind_limiter: RateLimiter,
    pub(crate) hub: ws::Hub,
    started: Instant,
    max_relays_per_ip: usize,
}

type St = Arc<AppState>;

/// An HTTP error rendered as `{"error": "..."}`.
#[derive(Debug)]
pub(crate) struct ApiError(StatusCode, String);

impl ApiError {
    pub(crate) fn new(code: StatusCode, msg: impl Into<String>) -> Self {
        Self(code, msg.into())
    }
    pub(crate) fn status(&self) -> StatusCode {
        self.0
    }
    pub(crate) fn message(&self) -> &str {
        &self.1
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        tracing::error!(error = %e, "database error");
        Self(StatusCode::INTERNAL_SERVER_ERROR, "database error".into())
    }
}

type ApiResult<T> = Result<T, ApiError>;

fn bad(msg: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, msg)
}

fn parse_json<T: DeserializeOwned>(body: &Bytes) -> ApiResult<T> {
    serde_json::from_slice(body).map_err(|e| bad(format!("invalid payload: {e}")))
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    wavry_control_core::presented_token(headers, "x-wavry-token")
}

fn token_matches(presented: Option<&str>, expected: Option<&String>) -> bool {
    match (presented, expected) {
        (Some(p), Some(e)) => ct_eq(
            wavry_control_core::sha256_hex(p.as_bytes()).as_bytes(),
            wavry_control_core::sha256_hex(e.as_bytes()).as_bytes(),
        ),
        _ => false,
    }
}

/// Builds state, runs migrations, serves until a shutdown signal.
pub(crate) async fn serve(cli: Cli) -> anyhow::Result<()> {
    wavry_control_core::check_bind(
        cli.listen,
        "WAVRY_MASTER_ALLOW_PUBLIC_BIND",
        "WAVRY_MASTER_ALLOW_HOST_PROD_BIND",
    )?;
    let production = env_str("WAVRY_ENVIRONMENT")
        .is_some_and(|v| v.eq_ignore_ascii_case("production"))
        || env_flag("WAVRY_ENVIRONMENT_PRODUCTION");
    let insecure_dev = cli.insecure_dev && env_flag("WAVRY_MASTER_INSECURE_DEV");
    if cli.insecure_dev && !insecure_dev {
        anyhow::bail!("--insecure-dev also needs WAVRY_MASTER_INSECURE_DEV=1");
    }
    if insecure_dev && production {
        anyhow::bail!("--insecure-dev is refused when WAVRY_ENVIRONMENT=production");
    }
    std::fs::create_dir_all(&cli.data_dir)
        .with_context(|| format!("creating {}", cli.data_dir.display()))?;
    let url = cli
        .database_url
        .clone()
        .unwrap_or_else(|| format!("sqlite://{}", cli.data_dir.join("master.db").display()));
    let (db, backend) = wavry_control_core::open_database(&url, 8, MIGRATIONS)
        .await
        .context("opening database")?;
    tracing::info!(database = %wavry_control_core::redact_url(&url), ?backend, "database ready");

    let loaded = keys::load(&cli.data_dir)?;
    let signer =
        LeaseSigner::new(&loaded.key, env_str("WAVRY_MASTER_KEY_ID")).context("lease signer")?;
    tracing::info!(key_id = signer.key_id(), source = %loaded.source, provisioned = loaded.provisioned, "lease signing key loaded");

    let relay_token = env_str("WAVRY_MASTER_RELAY_AUTH_TOKEN");
    let relay_allowed_ids: HashSet<String> = env_list("WAVRY_MASTER_RELAY_ALLOWED_IDS", &[])
        .into_iter()
        .collect();
    if relay_token.is_none() && relay_allowed_ids.is_empty() && !insecure_dev {
        tracing::warn!(
            "neither WAVRY_MASTER_RELAY_AUTH_TOKEN nor WAVRY_MASTER_RELAY_ALLOWED_IDS is set: no relay can register"
        );
    }
    let service_token = env_str("WAVRY_MASTER_SERVICE_TOKEN").filter(|t| {
        let ok = t.len() >= 32;
        if !ok {
            tracing::warn!("WAVRY_MASTER_SERVICE_TOKEN shorter than 32 characters: ignored");
        }
        ok
    });

    let mut reps = HashMap::new();
    for row in
        sqlx::query("SELECT relay_id, success, failure, quality_sum, samples FROM relay_reputation")
            .fetch_all(&db)
            .await?
    {
        reps.insert(
            row.try_get::<String, _>(0)?,
            Reputation {
                success: row.try_get(1)?,
                failure: row.try_get(2)?,
                quality_sum: row.try_get(3)?,
                samples: row.try_get(4)?,
            },
        );
    }
    let revoked = load_revoked(&db).await?;

    let origins = env_list(
        "WAVRY_MASTER_ALLOWED_ORIGINS",
        &[
            "http://localhost:1420",
            "http://127.0.0.1:1420",
            "tauri://localhost",
        ],
    );
    let origin = OriginPolicy {
        allowed: origins.clone(),
        require: env_flag_or("WAVRY_MASTER_WS_REQUIRE_ORIGIN", true)
            && !env_flag("WAVRY_MASTER_WS_ALLOW_MISSING_ORIGIN"),
    };
    let st = Arc::new(AppState {
        db,
        signer,
        provisioned: loaded.provisioned,
        lease_ttl: i64::try_from(env_u64("WAVRY_MASTER_LEASE_TTL_SECS", 900).clamp(60, 3600))
            .unwrap_or(900),
        relay_token,
        relay_allowed_ids,
        insecure_dev,
        service_token,
        admin: AdminAuth::from_env(),
        ip: ClientIpResolver::new(cli.trust_proxy.iter().copied()),
        origin,
        relays: RwLock::new(HashMap::new()),
        reps: RwLock::new(reps),
        revoked: RwLock::new(revoked),
        issued: Mutex::new(HashMap::new()),
        challenges: Mutex::new(Challenges::new(
            usize::try_from(env_u64("WAVRY_MASTER_MAX_CHALLENGES", MAX_CHALLENGES))
                .unwrap_or(50_000),
            CHALLENGE_TTL,
        )),
        lease_limiter: RateLimiter::from_env("WAVRY_MASTER_LEASE_RATE_LIMIT", 10, 60, 1_000_000),
        auth_limiter: RateLimiter::from_env("WAVRY_MASTER_AUTH_RATE_LIMIT", 30, 60, 100_000),
        admin_limiter: RateLimiter::from_env("WAVRY_MASTER_ADMIN_RATE_LIMIT", 60, 60, 10_000),
        relay_limiter: RateLimiter::from_env("WAVRY_MASTER_RELAY_RATE_LIMIT", 120, 60, 100_000),
        bind_limiter: RateLimiter::from_env("WAVRY_MASTER_WS_BIND_RATE", 30, 60, 100_000),
        hub: ws::Hub::default(),
        started: Instant::now(),
        max_relays_per_ip: usize::try_from(env_u64("WAVRY_MASTER_MAX_RELAYS_PER_IP", 5))
            .unwrap_or(5),
    });

    merge_registry(&st)
        .await
        .context("loading the relay registry")?;
    tokio::spawn(sweeper(st.clone()));
    tokio::spawn(registry_sync(st.clone()));

    let cors = if env_flag("WAVRY_MASTER_CORS_ALLOW_ANY") {
        tower_http::cors::CorsLayer::permissive()
    } else {
        tower_http::cors::CorsLayer::new()
            .allow_origin(
                origins
                    .iter()
                    .filter_map(|o| HeaderValue::from_str(o).ok())
                    .collect::<Vec<_>>(),
            )
            .allow_methods([Method::GET, Method::POST])
            .allow_headers([header::CONTENT_TYPE, header::AUTHORIZATION])
    };
    let app = Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/.well-known/wavry-id", get(well_known))
        .route("/v1/relays/register", post(relay_register))
        .route("/v1/relays/heartbeat", post(relay_heartbeat))
        .route("/v1/relays", get(relay_list))
        .route("/v1/feedback", post(feedback))
        .route("/v1/leases", post(leases))
        .route("/v1/auth/register", post(auth_register))
        .route("/v1/auth/register/verify", post(auth_register_verify))
        .route("/v1/auth/login", post(auth_login))
        .route("/admin/api/sessions/revoke", post(admin_revoke))
        .route("/admin/api/relays/update_state", post(admin_update_state))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            Duration::from_secs(15),
        ))
        .route("/ws", get(ws::upgrade))
        .layer(DefaultBodyLimit::max(64 * 1024))
        .layer(cors)
        .with_state(st);
    let listener = tokio::net::TcpListener::bind(cli.listen)
        .await
        .with_context(|| format!("binding {}", cli.listen))?;
    tracing::info!(listen = %listener.local_addr()?, "wavry-master listening");
    wavry_control_core::serve_http(listener, app, wavry_control_core::shutdown_signal()).await;
    Ok(())
}

async fn load_revoked(db: &Pool) -> Result<HashSet<String>, sqlx::Error> {
    let rows = sqlx::query("SELECT subject FROM revoked_identities")
        .fetch_all(db)
        .await?;
    rows.iter().map(|r| r.try_get::<String, _>(0)).collect()
}

async fn sweeper(st: St) {
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

// ---------------------------------------------------------------------------------------------
// Shared relay registry (write-through + periodic merge)

fn now_ms() -> i64 {
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

async fn persist_relay(db: &Pool, r: &Relay) -> Result<(), sqlx::Error> {
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
async fn merge_registry(st: &AppState) -> Result<(), sqlx::Error> {
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

async fn registry_sync(st: St) {
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

// ---------------------------------------------------------------------------------------------
// Health

fn assignable_count(st: &AppState) -> usize {
    let now = Instant::now();
    st.relays
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .values()
        .filter(|r| r.state.assignable() && now.duration_since(r.last_seen) <= relays::STALE_AFTER)
        .count()
}

async fn health(State(st): State<St>) -> Json<Value> {
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

async fn ready(State(st): State<St>) -> Response {
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

async fn well_known(State(st): State<St>) -> Json<Value> {
    let pk = st.signer.public_key();
    Json(json!({
        "public_key": hex::encode(pk),
        "wavry_id": WavryId::from_bytes(*pk).to_string(),
        "key_id": st.signer.key_id(),
        "version": "1.0",
    }))
}

// ---------------------------------------------------------------------------------------------
// Relays

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

async fn relay_register(
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

async fn relay_heartbeat(
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
    Ok(Json(json!({ "ok": true, "state": snapshot.state })))
}

async fn relay_list(State(st): State<St>) -> Json<Value> {
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

// ---------------------------------------------------------------------------------------------
// Leases

/// Who is asking for a lease.
pub(crate) enum Caller {
    /// A trusted service (gateway) with the service token: body names both gateway subjects
    /// and the service receives both leases (see [`check_service_request`]).
    Service,
    /// A master identity session.
    Identity(String),
}

fn valid_sub(s: &str) -> bool {
    !s.is_empty() && s.len() <= 128 && !s.chars().any(char::is_control)
}

impl AppState {
    fn is_revoked(&self, p: &PeerRef) -> bool {
        let set = self
            .revoked
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        set.contains(&p.sub) || p.wavry_id.as_ref().is_some_and(|w| set.contains(w))
    }

    /// Ranks relays and issues one lease per peer, each for its own role.
    pub(crate) fn issue(&self, req: &LeaseRequest) -> ApiResult<LeaseGrant> {
        if !valid_sub(&req.requester.sub) || !valid_sub(&req.target.sub) {
            return Err(bad("requester and target must be non-empty names"));
        }
        if req.requester.sub == req.target.sub {
            return Err(bad("cannot request a relay to yourself"));
        }
        if req.probes.len() > wavry_signal::MAX_RELAY_LIST
            || req.exclude.len() > wavry_signal::MAX_RELAY_LIST
        {
            return Err(bad("too many probes or exclusions"));
        }
        if self.is_revoked(&req.requester) || self.is_revoked(&req.target) {
            return Err(ApiError::new(StatusCode::FORBIDDEN, "identity revoked"));
        }
        if !self.provisioned {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "signing key not provisioned",
            ));
        }
        if !self.lease_limiter.check(&req.requester.sub) {
            return Err(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "lease rate limit exceeded",
            ));
        }
        let (ranked, bitrate) = {
            let relays = self
                .relays
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let reps = self
                .reps
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let ranked = relays::rank(
                &relays,
                &reps,
                &req.probes,
                req.region.as_deref(),
                &req.exclude,
            );
            let bitrate = ranked
                .first()
                .and_then(|r| relays.get(&r.relay_id))
                .map_or(LEASE_HARD_KBPS, |r| r.max_bitrate_kbps);
            (ranked, bitrate)
        };
        let Some(best) = ranked.first().cloned() else {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "no relay available",
            ));
        };
        let sid = Uuid::new_v4();
        let now = OffsetDateTime::now_utc();
        let exp = now + time::Duration::seconds(self.lease_ttl);
        let requester_role = req.requester_role.unwrap_or(Role::Client);
        let hard = bitrate.min(LEASE_HARD_KBPS);
        let make = |p: &PeerRef, role: Role| -> ApiResult<Credentials> {
            let claims = LeaseClaims {
                sub: p.sub.clone(),
                wavry_id: p.wavry_id.clone(),
                sid,
                role: match role {
                    Role::Client => LeaseRole::Client,
                    Role::Server => LeaseRole::Server,
                },
                rid: best.relay_id.clone(),
                kid: Some(self.signer.key_id().to_owned()),
                jti: Some(Uuid::new_v4().to_string()),
                iat: now,
                nbf: now - time::Duration::seconds(5),
                exp,
                slimit: Some(LEASE_SOFT_KBPS.min(hard)),
                hlimit: Some(hard),
            };
            let token = self.signer.issue(&claims).map_err(|e| {
                tracing::error!(error = %e, "lease signing failed");
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "lease signing failed")
            })?;
            Ok(Credentials {
                sub: p.sub.clone(),
                role,
                token,
            })
        };
        let requester = make(&req.requester, requester_role)?;
        let target = make(&req.target, requester_role.peer())?;
        {
            let mut issued = self
                .issued
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if issued.len() < MAX_ISSUED {
                issued.insert(
                    sid,
                    Issued {
                        relay_id: best.relay_id.clone(),
                        participants: [req.requester.clone(), req.target.clone()],
                        at: Instant::now(),
                    },
                );
            }
        }
        tracing::debug!(session_id = %sid, relay_id = %best.relay_id, "leases issued");
        Ok(LeaseGrant {
            session_id: sid,
            relay_id: best.relay_id.clone(),
            addr: best.addr.clone(),
            expires_at: exp.unix_timestamp(),
            key_id: self.signer.key_id().to_owned(),
            requester,
            target: Some(target),
            ranked,
        })
    }

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

async fn caller(st: &AppState, headers: &HeaderMap) -> ApiResult<Caller> {
    let presented = bearer(headers);
    if token_matches(presented, st.service_token.as_ref()) {
        return Ok(Caller::Service);
    }
    if let Some(t) = presented {
        if let Some(id) = st.session_identity(t).await? {
            return Ok(Caller::Identity(id));
        }
    }
    Err(ApiError::new(
        StatusCode::UNAUTHORIZED,
        "service token or identity session required",
    ))
}

/// What the service token may request: a pair of leases for two gateway subjects (usernames,
/// never a Wavry ID in `sub`, so a service cannot mint a lease naming a master identity), each
/// with an optional, well-formed Wavry ID. The service receives both leases and delivers each
/// to its holder.
fn check_service_request(req: &LeaseRequest) -> ApiResult<()> {
    for p in [&req.requester, &req.target] {
        if p.sub.trim().parse::<WavryId>().is_ok() {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "the service token may only name gateway subjects (not Wavry IDs) in sub",
            ));
        }
        if p.wavry_id
            .as_deref()
            .is_some_and(|w| w.parse::<WavryId>().is_err())
        {
            return Err(bad("invalid wavry_id"));
        }
    }
    Ok(())
}

impl AppState {
    /// Issues a lease pair for the master identity `me` towards a Wavry ID bound to `/ws`:
    /// the requester is always `me`, the target's lease goes to the target's socket only,
    /// and the returned grant carries only the caller's lease (HTTP and `/ws` alike).
    pub(crate) fn issue_for_identity(
        &self,
        me: &str,
        mut req: LeaseRequest,
    ) -> ApiResult<LeaseGrant> {
        let named = match (&req.target.wavry_id, req.target.sub.trim()) {
            (Some(w), s) if !s.is_empty() && s != w.trim() => {
                return Err(bad("target sub and wavry_id disagree"));
            }
            (Some(w), _) => w.trim().to_owned(),
            (None, s) => s.to_owned(),
        };
        let target = named
            .parse::<WavryId>()
            .map_err(|_| bad("target must be a Wavry ID"))?
            .to_string();
        req.requester = PeerRef {
            sub: me.to_owned(),
            wavry_id: Some(me.to_owned()),
        };
        req.target = PeerRef {
            sub: target.clone(),
            wavry_id: Some(target.clone()),
        };
        if target == me {
            return Err(bad("cannot request a relay to yourself"));
        }
        if self.is_revoked(&req.target) {
            return Err(ApiError::new(StatusCode::FORBIDDEN, "identity revoked"));
        }
        if !self.hub.is_bound(&target) {
            return Err(ApiError::new(StatusCode::NOT_FOUND, "target not connected"));
        }
        let mut grant = self.issue(&req)?;
        if let Some(theirs) = grant.target.take() {
            self.hub
                .send(&target, ws::credentials_message(&grant, &theirs, me));
        }
        Ok(grant)
    }
}

async fn leases(
    State(st): State<St>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Json<LeaseGrant>> {
    let who = caller(&st, &headers).await?;
    let req: LeaseRequest = parse_json(&body)?;
    match who {
        Caller::Identity(id) => st.issue_for_identity(&id, req).map(Json),
        Caller::Service => {
            check_service_request(&req)?;
            st.issue(&req).map(Json)
        }
    }
}

#[derive(Deserialize)]
struct FeedbackReq {
    session_id: Uuid,
    relay_id: String,
    quality_score: u32,
    #[serde(default)]
    issues: Vec<String>,
    /// Ed25519 signature (hex) by a participant's Wavry ID over
    /// `"wavry-feedback-v1\n{session_id}\n{relay_id}\n{quality_score}"`.
    #[serde(default)]
    signature: Option<String>,
    /// With the service token: which participant reports.
    #[serde(default)]
    reporter: Option<String>,
}

async fn feedback(State(st): State<St>, headers: HeaderMap, body: Bytes) -> ApiResult<Json<Value>> {
    let req: FeedbackReq = parse_json(&body)?;
    if req.quality_score > 100 || req.issues.len() > 16 || req.issues.iter().any(|i| i.len() > 64) {
        return Err(bad("quality_score must be 0..100, at most 16 short issues"));
    }
    let issued = st
        .issued
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .get(&req.session_id)
        .cloned();
    let Some(issued) = issued.filter(|i| i.relay_id == req.relay_id) else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "no such relay session issued by this master",
        ));
    };
    let reporter = if token_matches(bearer(&headers), st.service_token.as_ref()) {
        let r = req.reporter.clone().unwrap_or_default();
        if !issued.participants.iter().any(|p| p.sub == r) {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "reporter did not take part in this session",
            ));
        }
        r
    } else {
        let sig = req
            .signature
            .as_deref()
            .and_then(|s| hex::decode(s).ok())
            .ok_or_else(|| ApiError::new(StatusCode::UNAUTHORIZED, "signed feedback required"))?;
        let msg = format!(
            "wavry-feedback-v1\n{}\n{}\n{}",
            req.session_id, req.relay_id, req.quality_score
        );
        issued
            .participants
            .iter()
            .find(|p| {
                p.wavry_id
                    .as_deref()
                    .and_then(|w| w.parse::<WavryId>().ok())
                    .is_some_and(|w| w.verify(msg.as_bytes(), &sig).is_ok())
            })
            .map(|p| p.sub.clone())
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "feedback signature does not match a participant",
                )
            })?
    };
    let success = req.quality_score > 50;
    let inserted = sqlx::query(
        "INSERT INTO relay_feedback (session_id, reporter, relay_id, quality, success, issues, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (session_id, reporter) DO NOTHING",
    )
    .bind(req.session_id.to_string())
    .bind(&reporter)
    .bind(&req.relay_id)
    .bind(i64::from(req.quality_score))
    .bind(i64::from(success))
    .bind(req.issues.join(","))
    .bind(unix_now())
    .execute(&st.db)
    .await?
    .rows_affected();
    if inserted == 0 {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "feedback already recorded for this session",
        ));
    }
    sqlx::query(
        "INSERT INTO relay_reputation (relay_id, success, failure, quality_sum, samples, updated_at) VALUES ($1, $2, $3, $4, 1, $5) \
         ON CONFLICT (relay_id) DO UPDATE SET success = relay_reputation.success + $2, failure = relay_reputation.failure + $3, \
         quality_sum = relay_reputation.quality_sum + $4, samples = relay_reputation.samples + 1, updated_at = $5",
    )
    .bind(&req.relay_id)
    .bind(i64::from(success))
    .bind(i64::from(!success))
    .bind(f64::from(req.quality_score))
    .bind(unix_now())
    .execute(&st.db)
    .await?;
    let mut reps = st
        .reps
        .write()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let r = reps.entry(req.relay_id.clone()).or_default();
    r.success += i64::from(success);
    r.failure += i64::from(!success);
    r.quality_sum += f64::from(req.quality_score);
    r.samples += 1;
    Ok(Json(json!({ "accepted": true })))
}

// ---------------------------------------------------------------------------------------------
// Identity accounts (Ed25519 challenge–response)

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

async fn auth_register(
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

async fn auth_register_verify(
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
    tracing::info!(wavry_id = %id, "identity registered");
    Ok((StatusCode::CREATED, Json(json!({ "wavry_id": id, "display_name": display_name, "token": token, "expires_at": expires_at })))
        .into_response())
}

async fn auth_login(
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
    Ok(Json(
        json!({ "wavry_id": id, "token": token, "expires_at": expires_at }),
    ))
}

// ---------------------------------------------------------------------------------------------
// Admin

fn admin_guard(st: &AppState, peer: SocketAddr, headers: &HeaderMap) -> ApiResult<IpAddr> {
    let ip = st.ip.resolve(peer, headers);
    if !st
        .admin_limiter
        .check(&format!("admin:{}", st.ip.rate_key(ip)))
    {
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

async fn admin_revoke(
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

async fn admin_update_state(
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
