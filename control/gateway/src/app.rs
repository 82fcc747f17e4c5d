//! Gateway state, router, shared helpers, health/metrics and relay reports.

use std::{
    net::{IpAddr, SocketAddr},
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

use anyhow::Context;
use axum::{
    Json, Router,
    body::{Body, Bytes},
    extract::{ConnectInfo, DefaultBodyLimit, MatchedPath, Request, State},
    http::{HeaderMap, HeaderValue, Method, StatusCode, header},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use serde::{Deserialize, de::DeserializeOwned};
use serde_json::{Value, json};
use sqlx::Row;
use wavry_control_core::{
    AdminAuth, ClientIpResolver, OriginPolicy, Pool, RateLimiter, env_flag, env_flag_or, env_list,
    env_str, hash_token, unix_now,
};

use crate::{
    Cli, admin, auth, bus,
    metrics::AuthMetrics,
    password,
    stun::{self, StunListen},
    totp::TotpKey,
    ws,
};

const MIGRATIONS: &[wavry_control_core::MigrationSource] = &[
    (1, "init", include_str!("../migrations/0001_init.sql")),
    (2, "cluster", include_str!("../migrations/0002_cluster.sql")),
];

/// Everything the handlers share.
pub(crate) struct AppState {
    pub(crate) db: Pool,
    pub(crate) totp_key: TotpKey,
    pub(crate) admin: AdminAuth,
    pub(crate) ip: ClientIpResolver,
    pub(crate) origin: OriginPolicy,
    pub(crate) auth_limiter: RateLimiter,
    pub(crate) post_auth_limiter: RateLimiter,
    pub(crate) bind_limiter: RateLimiter,
    global_limiter: RateLimiter,
    pub(crate) metrics: AuthMetrics,
    pub(crate) hub: ws::Hub,
    /// Cross-instance bus (Postgres only).
    pub(crate) bus: Option<bus::Bus>,
    pub(crate) http: reqwest::Client,
    pub(crate) master_url: String,
    pub(crate) master_token: Option<String>,
    pub(crate) dummy_hash: String,
    /// Bounded argon2 worker pool (19 MiB per hash) so parallel logins cannot exhaust memory.
    pub(crate) hash_pool: password::HashPool,
    pub(crate) ws_max_per_ip: usize,
    pub(crate) ws_max_total: usize,
    /// Login attempts per client address before the backoff starts.
    pub(crate) ip_free_attempts: i64,
}

pub(crate) type St = Arc<AppState>;

/// An HTTP error rendered as `{"error": "..."}` (plus optional extra fields).
#[derive(Debug)]
pub(crate) struct ApiError(
    pub(crate) StatusCode,
    pub(crate) String,
    pub(crate) Option<Value>,
);

impl ApiError {
    pub(crate) fn new(code: StatusCode, msg: impl Into<String>) -> Self {
        Self(code, msg.into(), None)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = json!({ "error": self.1 });
        if let (Some(Value::Object(extra)), Value::Object(b)) = (self.2, &mut body) {
            b.extend(extra);
        }
        (self.0, Json(body)).into_response()
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        tracing::error!(error = %e, "database error");
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "database error")
    }
}

pub(crate) type ApiResult<T> = Result<T, ApiError>;

pub(crate) fn bad(msg: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, msg)
}

pub(crate) fn parse_json<T: DeserializeOwned>(body: &Bytes) -> ApiResult<T> {
    serde_json::from_slice(body).map_err(|e| bad(format!("invalid payload: {e}")))
}

pub(crate) fn rfc3339(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

/// A logged-in user resolved from a session token.
#[derive(Debug, Clone)]
pub(crate) struct SessionUser {
    pub(crate) user_id: String,
    pub(crate) username: String,
    pub(crate) public_key: String,
    pub(crate) token_hash: String,
}

impl SessionUser {
    /// The account's Wavry ID when its public key is a 32-byte Ed25519 key.
    pub(crate) fn wavry_id(&self) -> Option<String> {
        wavry_id_of(&self.public_key)
    }
}

/// Wavry ID for a hex public key of 32 bytes.
pub(crate) fn wavry_id_of(public_key_hex: &str) -> Option<String> {
    let b: [u8; 32] = hex::decode(public_key_hex).ok()?.try_into().ok()?;
    Some(wavry_rift::identity::WavryId::from_bytes(b).to_string())
}

impl AppState {
    /// Resolves a session token (valid, unexpired, user not banned).
    pub(crate) async fn session_user(&self, token: &str) -> ApiResult<Option<SessionUser>> {
        if !wavry_control_core::token_syntax_ok(token) {
            return Ok(None);
        }
        self.session_user_by_hash(hash_token(token)).await
    }

    /// Resolves a stored session id (`h1:` hash), under the same conditions as
    /// [`Self::session_user`].
    pub(crate) async fn session_user_by_hash(&self, h: String) -> ApiResult<Option<SessionUser>> {
        let now = unix_now();
        let row = sqlx::query(
            "SELECT u.id, u.username, u.public_key FROM sessions s JOIN users u ON u.id = s.user_id \
             WHERE s.token_hash = $1 AND s.expires_at > $2 \
             AND NOT EXISTS (SELECT 1 FROM user_bans b WHERE b.user_id = u.id AND (b.expires_at IS NULL OR b.expires_at > $2))",
        )
        .bind(&h)
        .bind(now)
        .fetch_optional(&self.db)
        .await?;
        Ok(match row {
            Some(r) => Some(SessionUser {
                user_id: r.try_get(0)?,
                username: r.try_get(1)?,
                public_key: r.try_get(2)?,
                token_hash: h,
            }),
            None => None,
        })
    }

    /// Closes every socket of a user, here and on other instances.
    pub(crate) async fn kick_user(&self, user_id: &str, reason: &str) -> usize {
        let n = self.hub.kick_user(user_id, reason);
        if let Some(b) = &self.bus {
            b.publish(bus::Event::KickUser {
                user_id: user_id.to_owned(),
                reason: reason.to_owned(),
            })
            .await;
        }
        n
    }

    /// Closes sockets bound with a session, here and on other instances.
    pub(crate) async fn kick_session(&self, hash: &str, reason: &str) -> usize {
        let n = self.hub.kick_session(hash, reason);
        if let Some(b) = &self.bus {
            b.publish(bus::Event::KickSession {
                hash: hash.to_owned(),
                reason: reason.to_owned(),
            })
            .await;
        }
        n
    }

    /// Delivers a text frame to a bound user, locally or through the bus.
    pub(crate) async fn deliver(&self, username: &str, text: String, remote: bool) -> bool {
        match (&self.bus, remote) {
            (Some(b), true) => {
                b.publish(bus::Event::Deliver {
                    to: username.to_owned(),
                    text,
                })
                .await;
                true
            }
            _ => self.hub.send_local(username, text),
        }
    }

    #[allow(clippy::unused_self)]
    pub(crate) fn count(&self, c: &prometheus_client::metrics::counter::Counter) {
        c.inc();
    }
}

/// Builds state, runs migrations, serves until a shutdown signal.
pub(crate) async fn serve(cli: Cli) -> anyhow::Result<()> {
    // A separate --stun-listen passes the same gate; the default follows --listen.
    for addr in [Some(cli.listen), cli.stun_listen.and_then(StunListen::addr)]
        .into_iter()
        .flatten()
    {
        wavry_control_core::check_bind(
            addr,
            "WAVRY_ALLOW_PUBLIC_BIND",
            "WAVRY_GATEWAY_ALLOW_HOST_PROD_BIND",
        )?;
    }
    std::fs::create_dir_all(&cli.data_dir)
        .with_context(|| format!("creating {}", cli.data_dir.display()))?;
    let url = cli
        .database_url
        .clone()
        .unwrap_or_else(|| format!("sqlite://{}", cli.data_dir.join("gateway.db").display()));
    let (db, backend) = wavry_control_core::open_database(&url, 8, MIGRATIONS)
        .await
        .context("opening database")?;
    tracing::info!(database = %wavry_control_core::redact_url(&url), ?backend, "database ready");
    let totp_key = TotpKey::load(&cli.data_dir)?;
    let mut origins = env_list(
        "WAVRY_ALLOWED_ORIGINS",
        &[
            "http://localhost:1420",
            "http://127.0.0.1:1420",
            "http://localhost:3000",
            "http://127.0.0.1:3000",
            "tauri://localhost",
        ],
    );
    // Native clients (see wavry_signal::NATIVE_ORIGIN) are accepted whatever the list says.
    if !origins.iter().any(|o| o == wavry_signal::NATIVE_ORIGIN) {
        origins.push(wavry_signal::NATIVE_ORIGIN.to_owned());
    }
    let master_token = env_str("WAVRY_GATEWAY_MASTER_TOKEN");
    if master_token.is_none() {
        tracing::warn!(
            "WAVRY_GATEWAY_MASTER_TOKEN unset: relay requests cannot be brokered through the master"
        );
    }
    let hash_pool = password::HashPool::new(
        usize::try_from(wavry_control_core::env_u64(
            "WAVRY_ARGON2_THREADS",
            std::thread::available_parallelism().map_or(2, |n| n.get() as u64),
        ))
        .unwrap_or(2),
        usize::try_from(wavry_control_core::env_u64("WAVRY_ARGON2_QUEUE", 1024)).unwrap_or(1024),
    )?;
    let dummy_hash = hash_pool
        .run(|| password::hash_password("wavry-timing-equaliser-password"))
        .await
        .context("argon2 pool")??;
    let bus_db = db.clone();
    let st = Arc::new(AppState {
        db,
        totp_key,
        admin: AdminAuth::from_env(),
        ip: ClientIpResolver::new(cli.trust_proxy.iter().copied()),
        origin: OriginPolicy {
            allowed: origins.clone(),
            require: env_flag_or("WAVRY_WS_REQUIRE_ORIGIN", true)
                && !env_flag("WAVRY_WS_ALLOW_MISSING_ORIGIN"),
        },
        auth_limiter: RateLimiter::from_env("WAVRY_AUTH_RATE_LIMIT", 20, 60, 10_000),
        post_auth_limiter: RateLimiter::from_env("WAVRY_POST_AUTH_RATE_LIMIT", 60, 60, 50_000),
        bind_limiter: RateLimiter::from_env("WAVRY_WS_BIND_RATE_LIMIT", 10, 60, 100_000),
        global_limiter: RateLimiter::from_env("WAVRY_GLOBAL_RATE_LIMIT", 600, 60, 200_000),
        metrics: AuthMetrics::new(),
        hub: ws::Hub::default(),
        bus: (backend == wavry_control_core::Backend::Postgres).then(|| bus::Bus::new(bus_db)),
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()?,
        master_url: cli.master_url.trim_end_matches('/').to_owned(),
        master_token,
        dummy_hash,
        hash_pool,
        ip_free_attempts: i64::try_from(wavry_control_core::env_u64(
            "WAVRY_LOGIN_IP_FREE_ATTEMPTS",
            crate::throttle::IP_FREE_ATTEMPTS.unsigned_abs(),
        ))
        .unwrap_or(i64::MAX),
        ws_max_per_ip: usize::try_from(wavry_control_core::env_u64("WAVRY_WS_MAX_PER_IP", 16))
            .unwrap_or(16),
        ws_max_total: usize::try_from(wavry_control_core::env_u64(
            "WAVRY_WS_MAX_CONNECTIONS",
            4096,
        ))
        .unwrap_or(4096),
    });
    tokio::spawn(sweeper(st.clone()));
    if st.bus.is_some() {
        tokio::spawn(bus::listen(st.clone(), url.clone()));
    }

    let cors = tower_http::cors::CorsLayer::new()
        .allow_origin(
            origins
                .iter()
                .filter_map(|o| HeaderValue::from_str(o).ok())
                .collect::<Vec<_>>(),
        )
        .allow_methods([Method::GET, Method::POST])
        .allow_headers([
            header::CONTENT_TYPE,
            header::AUTHORIZATION,
            header::HeaderName::from_static("x-session-token"),
            header::HeaderName::from_static("x-admin-token"),
        ]);
    let app = Router::new()
        .route("/", get(|| async { "Wavry Gateway Online" }))
        .route("/health", get(health))
        .route("/metrics/runtime", get(health))
        .route("/metrics/auth", get(metrics_auth))
        .route("/metrics", get(metrics_prometheus))
        .route("/metrics/prometheus", get(metrics_prometheus))
        .route("/auth/register", post(auth::register))
        .route("/auth/register/challenge", post(auth::register_challenge))
        .route("/auth/login", post(auth::login))
        .route("/auth/logout", post(auth::logout))
        .route("/auth/2fa/setup", post(auth::totp_setup))
        .route("/auth/2fa/enable", post(auth::totp_enable))
        .route("/v1/relays/report", post(relay_report))
        .route("/v1/relays/reputation", get(relay_reputation))
        .route("/admin", get(admin::page))
        .route("/admin/api/overview", get(admin::overview))
        .route("/admin/api/audit", get(admin::audit_list))
        .route("/admin/api/sessions/revoke", post(admin::revoke))
        .route("/admin/api/ban", post(admin::ban))
        .route("/admin/api/unban", post(admin::unban))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            Duration::from_secs(15),
        ))
        .route("/ws", get(ws::upgrade))
        .route_layer(middleware::from_fn_with_state(st.clone(), global_limit))
        .layer(DefaultBodyLimit::max(64 * 1024))
        .layer(cors)
        .with_state(st.clone());
    let listener = tokio::net::TcpListener::bind(cli.listen)
        .await
        .with_context(|| format!("binding {}", cli.listen))?;
    let http_addr = listener.local_addr()?;
    let stun_addr = cli.stun_listen.map_or(Some(http_addr), StunListen::addr);
    let stun_at = match stun_addr {
        Some(addr) => {
            let socket = tokio::net::UdpSocket::bind(addr)
                .await
                .with_context(|| format!("binding STUN (UDP) {addr}"))?;
            let at = socket.local_addr()?.to_string();
            tokio::spawn(stun::serve(socket, st.clone()));
            at
        }
        None => "off".to_owned(),
    };
    tracing::info!(listen = %http_addr, stun = %stun_at, "wavry-gateway listening");
    wavry_control_core::serve_http(listener, app, wavry_control_core::shutdown_signal()).await;
    Ok(())
}

/// Global per-IP, per-route limit (not for `/`, `/health`, `/metrics`, `/metrics/*`), keyed by
/// the matched route pattern, so requests to many distinct paths cannot fill its table. Runs
/// as a route layer: unknown paths are answered 404 without a key.
async fn global_limit(
    State(st): State<St>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    route: MatchedPath,
    req: Request<Body>,
    next: Next,
) -> Response {
    let path = route.as_str();
    if !(path == "/" || path == "/health" || path == "/metrics" || path.starts_with("/metrics/")) {
        let ip = st.ip.rate_key(st.ip.resolve(peer, req.headers()));
        if !st
            .global_limiter
            .check(&format!("{}:{path}:{ip}", req.method()))
        {
            st.count(&st.metrics.rate_limited);
            return ApiError::new(StatusCode::TOO_MANY_REQUESTS, "rate limited").into_response();
        }
    }
    next.run(req).await
}

async fn sweeper(st: St) {
    let mut tick = tokio::time::interval(Duration::from_secs(300));
    loop {
        tick.tick().await;
        let now = unix_now();
        if let Err(e) = sqlx::query("DELETE FROM sessions WHERE expires_at <= $1")
            .bind(now)
            .execute(&st.db)
            .await
        {
            tracing::warn!(error = %e, "session purge failed");
        }
        let _ = sqlx::query("DELETE FROM login_failures WHERE last_failure < $1")
            .bind(now - 3600)
            .execute(&st.db)
            .await;
        if let Some(b) = &st.bus {
            b.housekeeping().await;
        }
        for l in [
            &st.auth_limiter,
            &st.post_auth_limiter,
            &st.bind_limiter,
            &st.global_limiter,
        ] {
            l.purge();
        }
    }
}

pub(crate) fn client_ip(st: &AppState, peer: SocketAddr, headers: &HeaderMap) -> IpAddr {
    st.ip.resolve(peer, headers)
}

async fn health(State(st): State<St>) -> Json<Value> {
    Json(json!({
        "status": "ok",
        "active_ws_connections": st.hub.connections(),
        "relay_sessions_brokered": st.metrics.relay_sessions.get(),
        "database_ok": wavry_control_core::db_ok(&st.db).await,
        "cluster_bus_listening": st.bus.as_ref().map(|b| b.listening.load(Ordering::Relaxed)),
    }))
}

async fn metrics_auth(State(st): State<St>) -> Json<Value> {
    Json(Value::Object(
        st.metrics
            .pairs()
            .iter()
            .map(|(k, v)| ((*k).to_owned(), json!(v.get())))
            .collect(),
    ))
}

/// `/metrics` and `/metrics/prometheus`: OpenMetrics text.
async fn metrics_prometheus(State(st): State<St>) -> Response {
    st.metrics.respond(st.hub.connections())
}

// ---------------------------------------------------------------------------------------------
// Relay reports and reputation

#[derive(Deserialize)]
struct ReportReq {
    #[serde(default)]
    session_token: Option<String>,
    relay_id: String,
    session_id: uuid::Uuid,
    success: bool,
    #[serde(default)]
    bytes_sent: u64,
    #[serde(default)]
    duration_secs: u64,
    #[serde(default)]
    quality_score: Option<u32>,
}

async fn relay_report(
    State(st): State<St>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    let req: ReportReq = parse_json(&body)?;
    let token = req
        .session_token
        .as_deref()
        .or_else(|| wavry_control_core::presented_token(&headers, "x-session-token"))
        .unwrap_or_default();
    let user = st
        .session_user(token)
        .await?
        .ok_or_else(|| ApiError::new(StatusCode::UNAUTHORIZED, "invalid session"))?;
    let sid = req.session_id.to_string();
    let row = sqlx::query("SELECT relay_id FROM relay_sessions WHERE session_id = $1 AND (requester_id = $2 OR target_id = $2)")
        .bind(&sid)
        .bind(&user.user_id)
        .fetch_optional(&st.db)
        .await?;
    let relay_ok = match row {
        Some(r) => r.try_get::<String, _>(0)? == req.relay_id,
        None => false,
    };
    if !relay_ok {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "no such relay session for this user",
        ));
    }
    let bytes = i64::try_from(req.bytes_sent).unwrap_or(i64::MAX);
    let dur = i64::try_from(req.duration_secs.min(7 * 86_400)).unwrap_or(0);
    let now = unix_now();
    let inserted = sqlx::query(
        "INSERT INTO relay_usage (session_id, user_id, relay_id, success, bytes_transferred, duration_secs, ended_at) VALUES ($1, $2, $3, $4, $5, $6, $7) \
         ON CONFLICT (session_id, user_id) DO NOTHING",
    )
    .bind(&sid)
    .bind(&user.user_id)
    .bind(&req.relay_id)
    .bind(i64::from(req.success))
    .bind(bytes)
    .bind(dur)
    .bind(now)
    .execute(&st.db)
    .await?
    .rows_affected();
    if inserted == 0 {
        return Err(ApiError::new(StatusCode::CONFLICT, "already reported"));
    }
    sqlx::query(
        "INSERT INTO relay_reputation (relay_id, success_count, failure_count, bytes_total, duration_total, last_updated) VALUES ($1, $2, $3, $4, $5, $6) \
         ON CONFLICT (relay_id) DO UPDATE SET success_count = relay_reputation.success_count + $2, failure_count = relay_reputation.failure_count + $3, \
         bytes_total = relay_reputation.bytes_total + $4, duration_total = relay_reputation.duration_total + $5, last_updated = $6",
    )
    .bind(&req.relay_id)
    .bind(i64::from(req.success))
    .bind(i64::from(!req.success))
    .bind(bytes)
    .bind(dur)
    .bind(now)
    .execute(&st.db)
    .await?;
    // Verified feedback for the master's reputation (best effort).
    if let Some(token) = st.master_token.clone() {
        let quality = req
            .quality_score
            .unwrap_or(if req.success { 100 } else { 0 })
            .min(100);
        let body = json!({ "session_id": sid, "relay_id": req.relay_id, "quality_score": quality, "issues": [], "reporter": user.username });
        let (http, url) = (st.http.clone(), format!("{}/v1/feedback", st.master_url));
        tokio::spawn(async move {
            match http.post(url).bearer_auth(token).json(&body).send().await {
                Ok(r) if r.status().is_success() => {}
                Ok(r) => tracing::warn!(status = %r.status(), "master refused relay feedback"),
                Err(e) => tracing::warn!(error = %e, "master unreachable for relay feedback"),
            }
        });
    }
    Ok(Json(json!({ "accepted": true })))
}

async fn relay_reputation(State(st): State<St>) -> ApiResult<Json<Value>> {
    let rows = sqlx::query("SELECT relay_id, success_count, failure_count, bytes_total, duration_total, last_updated FROM relay_reputation ORDER BY relay_id")
        .fetch_all(&st.db)
        .await?;
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        let (s, f): (i64, i64) = (r.try_get(1)?, r.try_get(2)?);
        let total = s + f;
        out.push(json!({
            "relay_id": r.try_get::<String, _>(0)?,
            "success_count": s,
            "failure_count": f,
            "success_rate": if total > 0 { s as f64 / total as f64 } else { 0.0 },
            "bytes_total": r.try_get::<i64, _>(3)?,
            "avg_duration_secs": if total > 0 { r.try_get::<i64, _>(4)? as f64 / total as f64 } else { 0.0 },
            "last_updated": rfc3339(r.try_get(5)?),
        }));
    }
    Ok(Json(Value::Array(out)))
}
