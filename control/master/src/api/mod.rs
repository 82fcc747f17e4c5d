//! Master state and HTTP routes: shared state, errors and request helpers, the router.

mod admin;
mod auth;
mod feedback;
mod health;
mod leases;
mod registry;
mod relays;
mod sweep;

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex, RwLock},
    time::{Duration, Instant},
};

use anyhow::Context;
use axum::{
    Json, Router,
    body::Bytes,
    extract::DefaultBodyLimit,
    http::{HeaderMap, HeaderValue, Method, StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use serde::de::DeserializeOwned;
use serde_json::json;
use sqlx::Row;
use uuid::Uuid;
use wavry_control_core::{
    AdminAuth, ClientIpResolver, OriginPolicy, Pool, RateLimiter, ct_eq, env_flag, env_flag_or,
    env_list, env_str, env_u64,
};
use wavry_rift::lease::LeaseSigner;
use wavry_signal::broker::PeerRef;

use self::{
    admin::{admin_revoke, admin_update_state},
    auth::{auth_login, auth_register, auth_register_verify},
    feedback::feedback,
    health::{health, metrics, ready, well_known},
    leases::leases,
    registry::{merge_registry, registry_sync},
    relays::{relay_heartbeat, relay_list, relay_register},
    sweep::{load_revoked, sweeper},
};
use crate::{
    Cli,
    challenges::Challenges,
    keys,
    metrics::Metrics,
    relays::{Relay, Reputation},
    ws,
};

const MIGRATIONS: &[wavry_control_core::MigrationSource] = &[
    (1, "init", include_str!("../../migrations/0001_init.sql")),
    (
        2,
        "relays",
        include_str!("../../migrations/0002_relays.sql"),
    ),
    (
        3,
        "relay_nonces",
        include_str!("../../migrations/0003_relay_nonces.sql"),
    ),
];
/// Challenge lifetime.
const CHALLENGE_TTL: Duration = Duration::from_secs(120);
/// Pending challenges kept at most (oldest evicted); `WAVRY_MASTER_MAX_CHALLENGES`.
const MAX_CHALLENGES: u64 = 50_000;

/// A lease session issued by this master (kept to verify feedback).
#[derive(Debug, Clone)]
struct Issued {
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
    pub(crate) metrics: Metrics,
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
        metrics: Metrics::new(),
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
        .route("/metrics", get(metrics))
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
