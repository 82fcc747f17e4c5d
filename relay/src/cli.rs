//! Command line and environment of `wavry-relay` (spec RELAY §4 and §8).

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, ValueEnum};
use wavry_net::IoMode;
use wavry_net::xdp::XdpMode;
use wavry_relay::kernel_filter::FilterMode;

/// Packet I/O of the forwarding path (`--io`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum RelayIo {
    /// AF_XDP on --xdp-iface when given (and running as root), else io_uring, else portable.
    Auto,
    /// AF_XDP on --xdp-iface, or exit with the reason.
    Xdp,
    /// io_uring (GRO in, GSO out), or exit with the reason.
    Uring,
    /// The portable quinn-udp backend.
    Portable,
}

impl RelayIo {
    /// The `wavry-net` socket mode of the non-XDP path.
    pub(crate) fn socket_mode(self) -> IoMode {
        match self {
            Self::Auto | Self::Xdp => IoMode::Auto,
            Self::Uring => IoMode::Uring,
            Self::Portable => IoMode::Portable,
        }
    }
}

/// `wavry-relay`: lease-gated blind UDP forwarder.
#[derive(Parser, Debug)]
#[command(
    name = "wavry-relay",
    version,
    about = "Wavry relay: forwards RIFT datagrams between two peers that present leases signed by wavry-master",
    after_help = "Safety gates (spec RELAY §8): a non-loopback --listen or --health-listen needs \
WAVRY_RELAY_ALLOW_PUBLIC_BIND=1 and, outside a container (/.dockerenv, /run/.containerenv, $container), \
WAVRY_RELAY_ALLOW_HOST_PROD_BIND=1. --allow-insecure-dev (accept leases without verification) also \
needs WAVRY_ALLOW_INSECURE_RELAY=1. Other environment: WAVRY_RELAY_MASTER_TOKEN (bearer sent on \
register/heartbeat), WAVRY_IO (= --io), RUST_LOG (overrides --log-level)."
)]
#[allow(clippy::struct_excessive_bools)] // independent switches
pub(crate) struct Cli {
    /// UDP address to forward on (non-loopback needs WAVRY_RELAY_ALLOW_PUBLIC_BIND=1).
    #[arg(long, env = "WAVRY_RELAY_LISTEN", default_value = "127.0.0.1:4000")]
    pub(crate) listen: SocketAddr,
    /// Address handed to peers by the master (`ip:port`). Required when --listen is an
    /// unspecified address (0.0.0.0 / [::]); defaults to the bound address otherwise.
    #[arg(long, env = "WAVRY_RELAY_PUBLIC_ADDR")]
    pub(crate) public_addr: Option<SocketAddr>,
    /// Master base URL.
    #[arg(
        long,
        env = "WAVRY_MASTER_URL",
        default_value = "http://localhost:8080"
    )]
    pub(crate) master_url: String,
    /// Master's lease-signing public key (64 hex chars). Without it the key is fetched from
    /// `{master-url}/.well-known/wavry-id` and pinned beside --key.
    #[arg(long, env = "WAVRY_RELAY_MASTER_PUBLIC_KEY")]
    pub(crate) master_public_key: Option<String>,
    /// Bearer token for register/heartbeat (the master's WAVRY_MASTER_RELAY_AUTH_TOKEN). The
    /// relay also proves its identity key, which a master may allow-list instead.
    #[arg(long, env = "WAVRY_RELAY_MASTER_TOKEN", hide_env_values = true)]
    pub(crate) master_token: Option<String>,
    /// Relay identity key file (32-byte Ed25519 seed; created 0600 if missing). The relay id
    /// is derived from its public key, so it survives restarts. Without it: an ephemeral key.
    #[arg(long, env = "WAVRY_RELAY_KEY")]
    pub(crate) key: Option<PathBuf>,
    /// Most concurrent sessions (split evenly across --threads).
    #[arg(long, env = "WAVRY_RELAY_MAX_SESSIONS", default_value_t = 100)]
    pub(crate) max_sessions: usize,
    /// Seconds without a forwarded datagram after which a session is removed.
    #[arg(long, env = "WAVRY_RELAY_IDLE_TIMEOUT", default_value_t = 60)]
    pub(crate) idle_timeout: u64,
    /// Longest admission per presentation, seconds (60..3600; never past the lease's exp).
    #[arg(long, env = "WAVRY_RELAY_LEASE_DURATION_SECS", default_value_t = 300)]
    pub(crate) lease_duration_secs: u64,
    /// Seconds between cleanups of expired and idle sessions (min 1).
    #[arg(long, env = "WAVRY_RELAY_CLEANUP_INTERVAL_SECS", default_value_t = 10)]
    pub(crate) cleanup_interval_secs: u64,
    /// Seconds between stats log lines (min 5).
    #[arg(
        long,
        env = "WAVRY_RELAY_STATS_LOG_INTERVAL_SECS",
        default_value_t = 30
    )]
    pub(crate) stats_log_interval_secs: u64,
    /// New sessions are refused above this share of --max-sessions (50..100).
    #[arg(
        long,
        env = "WAVRY_RELAY_LOAD_SHED_THRESHOLD_PCT",
        default_value_t = 95
    )]
    pub(crate) load_shed_threshold_pct: u8,
    /// Per-source-IP rate (datagrams/s, token bucket) of control and unmatched datagrams;
    /// admitted peers' forwards are limited by their lease's bitrate instead.
    #[arg(long, env = "WAVRY_RELAY_IP_RATE_LIMIT_PPS", default_value_t = 1000)]
    pub(crate) ip_rate_limit_pps: u32,
    /// Lease and binding-signature verifications per second, relay-wide.
    #[arg(long, env = "WAVRY_RELAY_VERIFY_RATE", default_value_t = 2000)]
    pub(crate) verify_rate: u32,
    /// Verifications per second per source IP.
    #[arg(long, env = "WAVRY_RELAY_VERIFY_RATE_PER_IP", default_value_t = 20)]
    pub(crate) verify_rate_per_ip: u32,
    /// LEASE_REJECTs per second per source IP (rejects are never larger than the request).
    #[arg(long, env = "WAVRY_RELAY_REJECT_RATE_PER_IP", default_value_t = 5)]
    pub(crate) reject_rate_per_ip: u32,
    /// Region label advertised to the master.
    #[arg(long, env = "WAVRY_RELAY_REGION")]
    pub(crate) region: Option<String>,
    /// Autonomous system number advertised to the master.
    #[arg(long, env = "WAVRY_RELAY_ASN")]
    pub(crate) asn: Option<u32>,
    /// Bitrate advertised to the master and cap on any session's hard limit (kbit/s; the
    /// master requires >= 10000).
    #[arg(long, env = "WAVRY_RELAY_MAX_BITRATE", default_value_t = 20_000)]
    pub(crate) max_bitrate_kbps: u32,
    /// HTTP address for /health, /ready, /metrics.
    #[arg(
        long,
        env = "WAVRY_RELAY_HEALTH_LISTEN",
        default_value = "127.0.0.1:9091"
    )]
    pub(crate) health_listen: SocketAddr,
    /// Packet I/O backend. auto: AF_XDP when --xdp-iface is given and it can start (else one
    /// line says why), then io_uring when available, then portable.
    #[arg(long, env = "WAVRY_IO", value_enum, default_value_t = RelayIo::Auto, ignore_case = true)]
    pub(crate) io: RelayIo,
    /// Interfaces for AF_XDP (comma-separated or repeated): the XDP program on each sends UDP
    /// to --listen's port on the relay's addresses to AF_XDP sockets and passes everything
    /// else (ARP, ICMP, other ports) to the kernel. Needs root.
    #[arg(long, env = "WAVRY_RELAY_XDP_IFACE", value_delimiter = ',')]
    pub(crate) xdp_iface: Vec<String>,
    /// AF_XDP socket mode: auto (zero-copy where the driver allows, else copy), copy, zero-copy.
    #[arg(long, env = "WAVRY_RELAY_XDP_MODE", default_value = "auto")]
    pub(crate) xdp_mode: XdpMode,
    /// What the kernel drops before the forwarding threads see it (io_uring and portable
    /// paths; the AF_XDP path's kernel socket uses prefix). bound-peers keeps a kernel table of
    /// the bound (session, address) pairs, so floods of FORWARDs that copy a live session id
    /// from other sources cost the forwarding threads nothing.
    #[arg(long, env = "WAVRY_RELAY_KERNEL_FILTER", value_enum, default_value_t = FilterMode::BoundPeers, ignore_case = true)]
    pub(crate) kernel_filter: FilterMode,
    /// CPUs to pin the forwarding threads to (comma-separated or repeated): thread i runs on
    /// the i-th, wrapping around; the AF_XDP thread on the first. Pick the cores that take the
    /// NIC's interrupts (or their siblings). Default: not pinned.
    #[arg(long, env = "WAVRY_RELAY_CPUS", value_delimiter = ',')]
    pub(crate) cpus: Vec<usize>,
    /// Forwarding threads (one SO_REUSEPORT socket each); default: available cores.
    #[arg(long, env = "WAVRY_RELAY_THREADS")]
    pub(crate) threads: Option<usize>,
    /// Development only: accept any well-formed lease without verification and without a
    /// binding signature. Also needs WAVRY_ALLOW_INSECURE_RELAY=1.
    #[arg(long, env = "WAVRY_RELAY_ALLOW_INSECURE_DEV")]
    pub(crate) allow_insecure_dev: bool,
    /// Log filter (RUST_LOG wins when set).
    #[arg(long, env = "WAVRY_RELAY_LOG_LEVEL", default_value = "info")]
    pub(crate) log_level: String,
    /// Health check for containers without a shell: GET /health on --health-listen (loopback
    /// when it is 0.0.0.0 or [::]) within 3 s, exit 0 on 200, else 1 with one line on stderr.
    /// Starts nothing else.
    #[arg(long)]
    pub(crate) probe: bool,
}
