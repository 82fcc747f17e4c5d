//! `wavry-gateway`: accounts (argon2id), sessions (hashed at rest), TOTP 2FA, lockouts and
//! rate limits, the signalling WebSocket with relay brokering through `wavry-master`, relay
//! reports and reputation, metrics, and an admin API with a small admin page.

mod admin;
mod app;
mod auth;
mod bus;
mod metrics;
mod password;
mod proof;
mod stun;
mod throttle;
mod totp;
mod ws;

use std::{
    net::{IpAddr, SocketAddr},
    path::PathBuf,
};

use anyhow::Context;
use clap::Parser;

/// Command line of `wavry-gateway`. Flags win over environment variables.
#[derive(Parser, Debug)]
#[command(
    name = "wavry-gateway",
    version,
    about = "Wavry gateway: accounts, sessions, 2FA, signalling WebSocket, relay brokering, admin",
    after_help = "Environment: WAVRY_TOTP_KEY_B64 / WAVRY_TOTP_KEY_FILE (2FA secret encryption key; generated in the \
data dir if absent), WAVRY_GATEWAY_MASTER_TOKEN (service token the master accepts as WAVRY_MASTER_SERVICE_TOKEN), \
ADMIN_PANEL_TOKEN (>= 32 chars), WAVRY_ALLOWED_ORIGINS, WAVRY_WS_REQUIRE_ORIGIN (true), WAVRY_WS_ALLOW_MISSING_ORIGIN, \
WAVRY_WS_MAX_PER_IP (16), WAVRY_WS_MAX_CONNECTIONS (4096), WAVRY_WS_MESSAGES_PER_MINUTE (600 per socket), WAVRY_AUTH_RATE_LIMIT (20/60 s), WAVRY_POST_AUTH_RATE_LIMIT, \
WAVRY_WS_BIND_RATE_LIMIT (10/60 s), WAVRY_GLOBAL_RATE_LIMIT (600/60 s) with _WINDOW_SECS and _MAX_KEYS variants, \
WAVRY_WS_BIND_TIMEOUT_SECS (10), WAVRY_HTTP_HEADER_TIMEOUT_SECS (10), WAVRY_IPV6_RATE_PREFIX (64: IPv6 clients are \
limited per /64), WAVRY_ARGON2_THREADS (CPUs) and WAVRY_ARGON2_QUEUE (1024; a full queue answers 503), \
WAVRY_LOGIN_IP_FREE_ATTEMPTS (20 login attempts per address before the backoff; 5 per account), \
WAVRY_STUN_RATE_LIMIT (20 STUN answers/1 s per address) and WAVRY_STUN_TOTAL_RATE_LIMIT (2000/1 s) with _WINDOW_SECS \
variants, WAVRY_ALLOW_PUBLIC_BIND and WAVRY_GATEWAY_ALLOW_HOST_PROD_BIND (non-loopback listen and STUN listen)."
)]
pub(crate) struct Cli {
    /// Address to listen on (non-loopback needs WAVRY_ALLOW_PUBLIC_BIND=1).
    #[arg(
        long,
        env = "WAVRY_GATEWAY_BIND_ADDR",
        default_value = "127.0.0.1:3000"
    )]
    pub(crate) listen: SocketAddr,
    /// UDP address of the STUN responder (Binding requests only), or `off`. Default: the IP and
    /// port of --listen. Non-loopback needs the same gates as --listen.
    #[arg(
        long,
        env = "WAVRY_GATEWAY_STUN_LISTEN",
        value_name = "ADDR|off",
        value_parser = stun::parse_listen
    )]
    pub(crate) stun_listen: Option<stun::StunListen>,
    /// Log filter (RUST_LOG wins when set).
    #[arg(long, env = "WAVRY_GATEWAY_LOG_LEVEL", default_value = "info")]
    pub(crate) log_level: String,
    /// Database URL: `sqlite://path` (default `<data-dir>/gateway.db`) or `postgres://…`.
    #[arg(long, env = "WAVRY_GATEWAY_DATABASE_URL")]
    pub(crate) database_url: Option<String>,
    /// Directory for the SQLite file and the generated TOTP encryption key.
    #[arg(long, env = "WAVRY_GATEWAY_DATA_DIR", default_value = ".")]
    pub(crate) data_dir: PathBuf,
    /// Master base URL, for relay leases and feedback.
    #[arg(
        long,
        env = "WAVRY_MASTER_URL",
        default_value = "http://127.0.0.1:8080"
    )]
    pub(crate) master_url: String,
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
            eprintln!("wavry-gateway --probe: {e}");
            std::process::exit(1);
        }
        return Ok(());
    }
    wavry_control_core::init_tracing(&cli.log_level);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("tokio runtime")?;
    rt.block_on(app::serve(cli))
}
