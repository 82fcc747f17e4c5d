//! Shared server plumbing for `wavry-master` and `wavry-gateway`: storage (sqlx `Any` over
//! SQLite or Postgres, embedded migrations), opaque tokens hashed at rest, fixed-window rate
//! limits, client-IP resolution behind named proxies, bind gates, WebSocket origin policy,
//! [`metrics`] (serving a `prometheus-client` registry) and the container health [`probe`].

pub mod metrics;
pub mod probe;

use std::{
    collections::{HashMap, HashSet},
    net::{IpAddr, SocketAddr},
    path::Path,
    sync::Mutex,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use axum::http::HeaderMap;
use ring::rand::{SecureRandom, SystemRandom};

/// Errors of the shared plumbing.
#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    /// Database connection, query or migration failure.
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    /// Migration failure.
    #[error("migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A refused configuration (e.g. a public bind without its gate).
    #[error("{0}")]
    Config(String),
    /// The system random generator failed.
    #[error("system random number generator failed")]
    Rng,
}

/// Current Unix time in seconds.
pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// `n` random bytes from the OS generator.
pub fn random_bytes<const N: usize>() -> Result<[u8; N], CoreError> {
    let mut b = [0u8; N];
    SystemRandom::new()
        .fill(&mut b)
        .map_err(|_| CoreError::Rng)?;
    Ok(b)
}

/// A fresh opaque token: 32 random bytes as 64 lowercase hex characters.
pub fn new_token() -> Result<String, CoreError> {
    Ok(hex::encode(random_bytes::<32>()?))
}

/// Lowercase hex SHA-256.
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, data))
}

/// How a token is stored at rest: `"h1:" + hex(SHA-256(token))`. Also used as the token's
/// public identifier in logs and admin views.
pub fn hash_token(token: &str) -> String {
    format!("h1:{}", sha256_hex(token.as_bytes()))
}

/// Token syntax: 32..256 characters of `[A-Za-z0-9_.-]`.
pub fn token_syntax_ok(token: &str) -> bool {
    (32..=256).contains(&token.len())
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// Constant-time equality (length is not hidden).
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// First 16 hex chars of SHA-256 of an IP: how admin audit rows record actors.
pub fn ip_hash(ip: IpAddr) -> String {
    sha256_hex(ip.to_string().as_bytes())[..16].to_owned()
}

// ---------------------------------------------------------------------------------------------
// Environment

/// `true` when the variable is `1`, `true`, `yes` or `on` (case-insensitive).
pub fn env_flag(name: &str) -> bool {
    std::env::var(name).is_ok_and(|v| {
        matches!(
            v.trim().to_ascii_lowercase().as_str(),
            "1" | "true" | "yes" | "on"
        )
    })
}

/// Like [`env_flag`] but with a default when unset or empty.
pub fn env_flag_or(name: &str, default: bool) -> bool {
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => env_flag(name),
        _ => default,
    }
}

/// Parses a numeric variable, falling back to `default` when unset or unparsable.
pub fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

/// A non-empty string variable.
pub fn env_str(name: &str) -> Option<String> {
    std::env::var(name)
        .ok()
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
}

/// Comma-separated list variable, or `default`.
pub fn env_list(name: &str, default: &[&str]) -> Vec<String> {
    env_str(name).map_or_else(
        || default.iter().map(|s| (*s).to_owned()).collect(),
        |v| {
            v.split(',')
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .collect()
        },
    )
}

/// Installs the tracing subscriber: `RUST_LOG` wins, else `level`.
pub fn init_tracing(level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .init();
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            s.recv().await;
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { () = ctrl_c => {}, () = term => {} }
}

// ---------------------------------------------------------------------------------------------
// Serving

/// Time a client gets to send a request's headers (slow-loris protection); override with
/// `WAVRY_HTTP_HEADER_TIMEOUT_SECS` (1..60).
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves `app` over HTTP/1.1 (with WebSocket upgrades) until `shutdown` resolves, with a
/// header read timeout that `axum::serve` does not set. Requests carry
/// `ConnectInfo<SocketAddr>` like `into_make_service_with_connect_info`.
pub async fn serve_http(
    listener: tokio::net::TcpListener,
    app: axum::Router,
    shutdown: impl std::future::Future<Output = ()>,
) {
    use tower::Layer;
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(Duration::from_secs(
            env_u64(
                "WAVRY_HTTP_HEADER_TIMEOUT_SECS",
                HEADER_READ_TIMEOUT.as_secs(),
            )
            .clamp(1, 60),
        ))
        .keep_alive(true);
    let (close_tx, close_rx) = tokio::sync::watch::channel(());
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // Out of descriptors and the like: back off briefly instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let svc = axum::Extension(axum::extract::ConnectInfo(peer)).layer(app.clone());
        let conn = builder
            .serve_connection(
                hyper_util::rt::TokioIo::new(stream),
                hyper_util::service::TowerToHyperService::new(svc),
            )
            .with_upgrades();
        let mut close = close_rx.clone();
        tokio::spawn(async move {
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = close.changed() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
        });
    }
    drop(close_rx);
    let _ = close_tx.send(());
    // Give in-flight requests a moment to finish.
    let _ = tokio::time::timeout(Duration::from_secs(5), close_tx.closed()).await;
}

// ---------------------------------------------------------------------------------------------
// Binding

/// Whether this process runs in a container (`/.dockerenv`, `/run/.containerenv`, `$container`).
pub fn in_container() -> bool {
    Path::new("/.dockerenv").exists()
        || Path::new("/run/.containerenv").exists()
        || env_str("container").is_some()
}

/// Refuses a non-loopback listen address unless `public_gate` is set and, outside a
/// container, `host_prod_gate` too.
pub fn check_bind(
    addr: SocketAddr,
    public_gate: &str,
    host_prod_gate: &str,
) -> Result<(), CoreError> {
    if addr.ip().is_loopback() {
        return Ok(());
    }
    if !env_flag(public_gate) {
        return Err(CoreError::Config(format!(
            "refusing to listen on non-loopback {addr}: set {public_gate}=1 to allow a public bind"
        )));
    }
    if !in_container() && !env_flag(host_prod_gate) {
        return Err(CoreError::Config(format!(
            "refusing to listen on non-loopback {addr} outside a container: also set {host_prod_gate}=1"
        )));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Client addresses and origins

/// Resolves the client IP: the socket peer, unless the peer is one of the named trusted
/// proxies, in which case `X-Forwarded-For` is walked from the right and the first address
/// that is not a trusted proxy is the client. Nothing else is ever trusted.
#[derive(Debug, Clone)]
pub struct ClientIpResolver {
    trusted: HashSet<IpAddr>,
    v6_prefix: u8,
}

impl Default for ClientIpResolver {
    fn default() -> Self {
        Self::new([])
    }
}

/// Default IPv6 prefix length that rate limits and attempt counters key on: one /64 is what
/// a single subscriber usually holds, so keying on full addresses would let one client use
/// 2^64 keys.
pub const DEFAULT_IPV6_RATE_PREFIX: u8 = 64;

/// `ip` reduced to the block that rate limits key on: IPv4 as is (IPv4-mapped IPv6 too),
/// IPv6 masked to its first `v6_prefix` bits (0..=128).
pub fn ip_block(ip: IpAddr, v6_prefix: u8) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return IpAddr::V4(v4);
            }
            let bits = u32::from(v6_prefix.min(128));
            let mask = if bits == 0 {
                0
            } else {
                u128::MAX << (128 - bits)
            };
            IpAddr::V6(std::net::Ipv6Addr::from(u128::from(v6) & mask))
        }
    }
}

impl ClientIpResolver {
    /// A resolver trusting exactly these proxy addresses; rate keys use IPv6 /64 blocks
    /// unless `WAVRY_IPV6_RATE_PREFIX` (0..=128) says otherwise.
    pub fn new(trusted: impl IntoIterator<Item = IpAddr>) -> Self {
        Self {
            trusted: trusted.into_iter().collect(),
            v6_prefix: u8::try_from(
                env_u64(
                    "WAVRY_IPV6_RATE_PREFIX",
                    u64::from(DEFAULT_IPV6_RATE_PREFIX),
                )
                .min(128),
            )
            .unwrap_or(DEFAULT_IPV6_RATE_PREFIX),
        }
    }

    /// The client IP for a request from `peer` with `headers`.
    pub fn resolve(&self, peer: SocketAddr, headers: &HeaderMap) -> IpAddr {
        let peer_ip = peer.ip();
        if !self.trusted.contains(&peer_ip) {
            return peer_ip;
        }
        let mut hops: Vec<IpAddr> = Vec::new();
        for v in headers.get_all("x-forwarded-for") {
            if let Ok(s) = v.to_str() {
                hops.extend(s.split(',').filter_map(|h| h.trim().parse::<IpAddr>().ok()));
            }
        }
        hops.into_iter()
            .rev()
            .find(|ip| !self.trusted.contains(ip))
            .unwrap_or(peer_ip)
    }

    /// What rate limits and attempt counters key a client address on (see [`ip_block`]).
    pub fn rate_key(&self, ip: IpAddr) -> IpAddr {
        ip_block(ip, self.v6_prefix)
    }
}

/// WebSocket origin policy.
#[derive(Debug, Clone)]
pub struct OriginPolicy {
    /// Allowed `Origin` values (exact match).
    pub allowed: Vec<String>,
    /// Refuse requests without an `Origin` header.
    pub require: bool,
}

impl OriginPolicy {
    /// Whether a request with these headers may open a WebSocket.
    pub fn allows(&self, headers: &HeaderMap) -> bool {
        match headers.get("origin").and_then(|v| v.to_str().ok()) {
            Some(o) => self.allowed.iter().any(|a| a == o),
            None => !self.require,
        }
    }
}

/// Extracts a bearer token (`Authorization: Bearer …`) or the named header.
pub fn presented_token<'a>(headers: &'a HeaderMap, header: &str) -> Option<&'a str> {
    if let Some(v) = headers.get(header).and_then(|v| v.to_str().ok()) {
        return Some(v.trim());
    }
    headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
}

/// Admin token check: `ADMIN_PANEL_TOKEN` must be ≥ 32 characters; compares in constant time.
#[derive(Debug, Clone)]
pub struct AdminAuth {
    token: Option<String>,
}

/// Why an admin request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminRefusal {
    /// No usable `ADMIN_PANEL_TOKEN` configured.
    Disabled,
    /// Missing or wrong token.
    BadToken,
}

impl AdminRefusal {
    /// The message to answer with (401 in both services); a wrong token is logged with the
    /// caller's hashed address, never the token.
    pub fn message(self, ip: IpAddr) -> &'static str {
        match self {
            Self::Disabled => "admin panel disabled",
            Self::BadToken => {
                tracing::warn!(actor = %ip_hash(ip), "admin call with a wrong token");
                "unauthorized"
            }
        }
    }
}

/// One row of the `admin_audit_log` table, which both services keep.
#[derive(Debug, Clone, Copy)]
pub struct AuditEntry<'a> {
    /// What was done (`ban`, `revoke`, …).
    pub action: &'a str,
    /// Kind of target (`user`, `session`, …).
    pub target_type: &'a str,
    /// The target's id.
    pub target: &'a str,
    /// `ok`, `not_found`, …
    pub outcome: &'a str,
    /// The admin's address (stored hashed).
    pub ip: IpAddr,
    /// Free-form details.
    pub details: Option<&'a str>,
}

/// Appends an entry to `admin_audit_log`.
pub async fn write_audit(db: &Pool, e: AuditEntry<'_>) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT INTO admin_audit_log (id, action, target_type, target_id, outcome, actor_ip_hash, details, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)")
        .bind(uuid::Uuid::new_v4().to_string())
        .bind(e.action)
        .bind(e.target_type)
        .bind(e.target)
        .bind(e.outcome)
        .bind(ip_hash(e.ip))
        .bind(e.details.map(str::to_owned))
        .bind(unix_now())
        .execute(db)
        .await?;
    Ok(())
}

impl AdminAuth {
    /// Reads `ADMIN_PANEL_TOKEN`.
    pub fn from_env() -> Self {
        Self {
            token: env_str("ADMIN_PANEL_TOKEN").filter(|t| t.len() >= 32),
        }
    }

    /// Whether admin calls are possible at all.
    pub fn enabled(&self) -> bool {
        self.token.is_some()
    }

    /// Checks `X-Admin-Token` or `Authorization: Bearer`.
    pub fn check(&self, headers: &HeaderMap) -> Result<(), AdminRefusal> {
        let Some(expected) = &self.token else {
            return Err(AdminRefusal::Disabled);
        };
        match presented_token(headers, "x-admin-token") {
            Some(t)
                if ct_eq(
                    sha256_hex(t.as_bytes()).as_bytes(),
                    sha256_hex(expected.as_bytes()).as_bytes(),
                ) =>
            {
                Ok(())
            }
            _ => Err(AdminRefusal::BadToken),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Rate limiting

/// A fixed-window counter per key with a bounded key table. When the table is full, finished
/// windows are dropped and then the oldest keys are evicted, so a flood of new keys can never
/// refuse every newcomer (it can only make the oldest entries start a fresh window).
#[derive(Debug)]
pub struct RateLimiter {
    limit: u32,
    window: Duration,
    max_keys: usize,
    state: Mutex<LimiterTable>,
}

#[derive(Debug, Default)]
struct LimiterTable {
    counts: HashMap<String, (Instant, u32)>,
    /// Keys in insertion order (may hold keys already removed; compacted when it grows).
    order: std::collections::VecDeque<String>,
}

impl LimiterTable {
    fn purge(&mut self, now: Instant, window: Duration) {
        self.counts
            .retain(|_, (start, _)| now.duration_since(*start) < window);
        if self.order.len() > self.counts.len().saturating_mul(2).max(64) {
            let counts = &self.counts;
            self.order.retain(|k| counts.contains_key(k));
        }
    }
}

impl RateLimiter {
    /// `limit` events per `window` per key, at most `max_keys` keys (at least 1).
    pub fn new(limit: u32, window: Duration, max_keys: usize) -> Self {
        Self {
            limit,
            window,
            max_keys: max_keys.max(1),
            state: Mutex::new(LimiterTable::default()),
        }
    }

    /// From `<PREFIX>` (limit), `<PREFIX>_WINDOW_SECS`, `<PREFIX>_MAX_KEYS` with defaults.
    pub fn from_env(prefix: &str, limit: u32, window_secs: u64, max_keys: usize) -> Self {
        Self::new(
            u32::try_from(env_u64(prefix, u64::from(limit))).unwrap_or(u32::MAX),
            Duration::from_secs(env_u64(&format!("{prefix}_WINDOW_SECS"), window_secs).max(1)),
            usize::try_from(env_u64(&format!("{prefix}_MAX_KEYS"), max_keys as u64))
                .unwrap_or(max_keys),
        )
    }

    /// Counts one event for `key`; `false` when over the limit.
    pub fn check(&self, key: &str) -> bool {
        let now = Instant::now();
        let mut t = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((start, count)) = t.counts.get_mut(key) {
            if now.duration_since(*start) >= self.window {
                *start = now;
                *count = 0;
            }
            *count = count.saturating_add(1);
            return *count <= self.limit;
        }
        if t.counts.len() >= self.max_keys {
            t.purge(now, self.window);
        }
        while t.counts.len() >= self.max_keys {
            let Some(oldest) = t.order.pop_front() else {
                break;
            };
            t.counts.remove(&oldest);
        }
        t.counts.insert(key.to_owned(), (now, 1));
        t.order.push_back(key.to_owned());
        self.limit >= 1
    }

    /// Drops finished windows (call periodically).
    pub fn purge(&self) {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .purge(Instant::now(), self.window);
    }

    /// Keys currently tracked.
    pub fn len(&self) -> usize {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .counts
            .len()
    }

    /// Whether no key is tracked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

// ---------------------------------------------------------------------------------------------
// Storage

/// One embedded migration: version, description, SQL (portable between SQLite and Postgres).
pub type MigrationSource = (i64, &'static str, &'static str);

/// A database pool (SQLite or Postgres behind sqlx `Any`).
pub type Pool = sqlx::AnyPool;

/// Which engine a pool talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// Embedded SQLite file.
    Sqlite,
    /// Postgres server.
    Postgres,
}

/// Opens (creating a SQLite file if needed, in WAL mode) and migrates a database.
/// URLs: `sqlite://path`, `sqlite:path`, `postgres://…`.
pub async fn open_database(
    url: &str,
    max_connections: u32,
    migrations: &[MigrationSource],
) -> Result<(Pool, Backend), CoreError> {
    sqlx::any::install_default_drivers();
    let backend = if url.starts_with("postgres:") || url.starts_with("postgresql:") {
        Backend::Postgres
    } else if url.starts_with("sqlite:") {
        Backend::Sqlite
    } else {
        return Err(CoreError::Config(format!(
            "unsupported database URL scheme (want sqlite: or postgres:): {}",
            redact_url(url)
        )));
    };
    let url = if backend == Backend::Sqlite && !url.contains("mode=") {
        let sep = if url.contains('?') { '&' } else { '?' };
        format!("{url}{sep}mode=rwc")
    } else {
        url.to_owned()
    };
    let pool = sqlx::any::AnyPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(10))
        .connect(&url)
        .await?;
    if backend == Backend::Sqlite {
        sqlx::query("PRAGMA journal_mode=WAL")
            .execute(&pool)
            .await?;
    }
    let migrator = sqlx::migrate::Migrator {
        migrations: migrations
            .iter()
            .map(|(v, d, sql)| {
                sqlx::migrate::Migration::new(
                    *v,
                    std::borrow::Cow::Borrowed(*d),
                    sqlx::migrate::MigrationType::Simple,
                    std::borrow::Cow::Borrowed(*sql),
                    false,
                )
            })
            .collect::<Vec<_>>()
            .into(),
        ignore_missing: false,
        locking: true,
        no_tx: false,
    };
    migrator.run(&pool).await?;
    Ok((pool, backend))
}

/// A database URL with any password removed, for logs.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}://***@{}", &url[..s], &url[at + 1..]),
        _ => url.to_owned(),
    }
}

/// Whether the database answers.
pub async fn db_ok(pool: &Pool) -> bool {
    tokio::time::timeout(
        Duration::from_secs(2),
        sqlx::query("SELECT 1").execute(pool),
    )
    .await
    .is_ok_and(|r| r.is_ok())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn tokens_hash_and_check() {
        let t = new_token().unwrap();
        assert_eq!(t.len(), 64);
        assert!(token_syntax_ok(&t));
        assert!(!token_syntax_ok("short"));
        assert!(hash_token(&t).starts_with("h1:"));
        assert!(ct_eq(b"abc", b"abc") && !ct_eq(b"abc", b"abd") && !ct_eq(b"ab", b"abc"));
    }

    #[test]
    fn limiter_counts_and_evicts_instead_of_refusing() {
        let l = RateLimiter::new(2, Duration::from_secs(60), 2);
        assert!(l.check("a") && l.check("a") && !l.check("a"));
        assert!(l.check("b"));
        assert!(
            l.check("c"),
            "a full table evicts the oldest key, never refuses a newcomer"
        );
        assert_eq!(l.len(), 2);
        assert!(l.check("b") && !l.check("b"), "b kept its count");
        for i in 0..10_000 {
            assert!(l.check(&format!("flood-{i}")));
        }
        assert_eq!(l.len(), 2, "bounded");
    }

    #[test]
    fn ipv6_keys_by_block() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(ip_block(a, 64), ip_block(b, 64));
        assert_ne!(ip_block(a, 64), ip_block(c, 64));
        assert_ne!(ip_block(a, 128), ip_block(b, 128));
        assert_eq!(ip_block(a, 0), ip_block(c, 0));
        let v4: IpAddr = "203.0.113.7".parse().unwrap();
        assert_eq!(ip_block(v4, 64), v4);
        let mapped: IpAddr = "::ffff:203.0.113.7".parse().unwrap();
        assert_eq!(ip_block(mapped, 64), v4);
    }

    #[test]
    fn forwarded_for_only_from_named_proxies() {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", "203.0.113.9, 10.0.0.2".parse().unwrap());
        let peer: SocketAddr = "10.0.0.1:5000".parse().unwrap();
        assert_eq!(ClientIpResolver::default().resolve(peer, &h), peer.ip());
        let r = ClientIpResolver::new(["10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap()]);
        assert_eq!(
            r.resolve(peer, &h),
            "203.0.113.9".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn urls_are_redacted() {
        assert_eq!(
            redact_url("postgres://u:secret@h:5432/db"),
            "postgres://***@h:5432/db"
        );
    }
}
