//! `wavry-master`: relay registry, ranked relay selection, PASETO lease issuance with a
//! persistent Ed25519 key, Ed25519 challenge–response identity accounts, and an
//! authenticated signalling WebSocket.

mod api;
mod challenges;
mod keys;
mod metrics;
mod relays;
mod ws;

use std::{net::IpAddr, net::SocketAddr, path::PathBuf};

use anyhow::Context;
use clap::Parser;

/// Command line of `wavry-master`. Flags win over environment variables.
#[derive(Parser, Debug)]
#[command(
    name = "wavry-master",
    version,
    about = "Wavry master: relay registry, relay selection, lease issuance, identity accounts, signalling",
    after_help = "Environment: WAVRY_MASTER_SIGNING_KEY / WAVRY_MASTER_KEY_FILE / WAVRY_MASTER_KEY_ID (lease key), \
WAVRY_MASTER_LEASE_TTL_SECS (900, 60..3600), WAVRY_MASTER_RELAY_AUTH_TOKEN (relay bearer), \
WAVRY_MASTER_RELAY_ALLOWED_IDS (relay Wavry IDs allowed without the bearer), WAVRY_MASTER_SERVICE_TOKEN \
(gateway bearer for /v1/leases and /v1/feedback), WAVRY_MASTER_LEASE_RATE_LIMIT (10 per \
WAVRY_MASTER_LEASE_RATE_LIMIT_WINDOW_SECS=60 per requester), WAVRY_MASTER_ALLOWED_ORIGINS, WAVRY_MASTER_CORS_ALLOW_ANY, \
WAVRY_MASTER_WS_REQUIRE_ORIGIN (true), WAVRY_MASTER_WS_ALLOW_MISSING_ORIGIN, WAVRY_MASTER_ALLOW_PUBLIC_BIND, \
WAVRY_MASTER_ALLOW_HOST_PROD_BIND, ADMIN_PANEL_TOKEN (>= 32 chars), WAVRY_MASTER_WS_MAX_PER_IP (16), \
WAVRY_MASTER_WS_MAX_CONNECTIONS (4096), WAVRY_MASTER_WS_MESSAGES_PER_MINUTE (600), WAVRY_MASTER_WS_BIND_RATE (30/min/IP), \
WAVRY_MASTER_AUTH_RATE_LIMIT (30/min/IP), WAVRY_MASTER_MAX_RELAYS_PER_IP (5), WAVRY_MASTER_SWEEP_SECS (10), \
WAVRY_MASTER_WS_BIND_TIMEOUT_SECS (10), WAVRY_MASTER_REGISTRY_SYNC_MS (2000, shared relay registry merge), \
WAVRY_HTTP_HEADER_TIMEOUT_SECS (10), WAVRY_MASTER_MAX_CHALLENGES (50000, oldest evicted), \
WAVRY_IPV6_RATE_PREFIX (64: IPv6 clients are limited per /64), WAVRY_ENVIRONMENT=production (refuses --insecure-dev)."
)]
pub(crate) struct Cli {
    /// Address to listen on (non-loopback needs WAVRY_MASTER_ALLOW_PUBLIC_BIND=1).
    #[arg(long, env = "WAVRY_MASTER_LISTEN", default_value = "127.0.0.1:8080")]
    pub(crate) listen: SocketAddr,
    /// Log filter (RUST_LOG wins when set).
    #[arg(long, env = "WAVRY_MASTER_LOG_LEVEL", default_value = "info")]
    pub(crate) log_level: String,
    /// Development mode: accept relays that present neither the bearer token nor an allowed
    /// identity. Also needs WAVRY_MASTER_INSECURE_DEV=1; refused when WAVRY_ENVIRONMENT=production.
    #[arg(long)]
    pub(crate) insecure_dev: bool,
    /// Database URL: `sqlite://path` (default `<data-dir>/master.db`) or `postgres://…`.
    #[arg(long, env = "WAVRY_MASTER_DATABASE_URL")]
    pub(crate) database_url: Option<String>,
    /// Directory for the SQLite file and the generated signing key.
    #[arg(long, env = "WAVRY_MASTER_DATA_DIR", default_value = ".")]
    pub(crate) data_dir: PathBuf,
    /// Reverse proxy address whose X-Forwarded-For is trusted (repeatable). Nothing else is.
    #[arg(long = "trust-proxy", value_name = "IP")]
    pub(crate) trust_proxy: Vec<IpAddr>,
    /// Health check for containers without a shell: GET /health on the --listen address
    /// (loopback when it is 0.0.0.0 or [::]) within 3 s, exit 0 on 200, else 1 with one line
    /// on stderr. Starts nothing else.
    #[arg(long)]
    pub(crate) probe: bool,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if cli.probe {
        use wavry_control_core::probe::{PROBE_TIMEOUT, probe_health};
        if let Err(e) = probe_health(cli.listen, PROBE_TIMEOUT) {
            eprintln!("wavry-master --probe: {e}");
            std::process::exit(1);
        }
        return Ok(());
    }
    wavry_control_core::init_tracing(&cli.log_level);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("tokio runtime")?;
    rt.block_on(api::serve(cli))
}
