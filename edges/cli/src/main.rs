//! `wavry`: identity keys and Wavry IDs, a gateway account (register, login), a ping to a
//! host, build information.

mod account;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use wavry_rift::{
    crypto::NOISE_PARAMS,
    identity::{IdentityKey, WavryId},
};

#[derive(Parser, Debug)]
#[command(
    name = "wavry",
    version,
    about = "Wavry command-line tools: identity keys, Wavry IDs, gateway accounts, ping, build info"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Generate an Ed25519 identity: writes <PREFIX>.key (secret seed, mode 0600) and
    /// <PREFIX>.pub, and prints the Wavry ID.
    Keygen {
        /// Path prefix of the two key files.
        #[arg(short, long, value_name = "PREFIX", default_value = "wavry")]
        output: PathBuf,
        /// Replace existing key files.
        #[arg(long)]
        force: bool,
    },
    /// Print the Wavry ID of a public key file (or of a secret .key file).
    ShowId {
        /// Path of a .pub file (raw 32-byte Ed25519 public key) or a .key file.
        #[arg(short, long, value_name = "PATH")]
        key: PathBuf,
    },
    /// Create a gateway account bound to an identity key (proven by signature) and write its
    /// session token to a private file.
    ///
    /// The password (12..128 bytes) is read from WAVRY_PASSWORD when set, else as one line
    /// from stdin. The token goes to --token-out (mode 0600), never to the terminal; hand it
    /// to wavry-server / wavry-client with WAVRY_SESSION_TOKEN_FILE=<path>.
    Register(account::RegisterArgs),
    /// Log in to a gateway account by username or email and write a new session token to a
    /// private file.
    ///
    /// The password is read from WAVRY_PASSWORD when set, else as one line from stdin. The
    /// token goes to --token-out (mode 0600), never to the terminal.
    Login(account::LoginArgs),
    /// Handshake with a host (encrypted, both identities verified), then time echo probes:
    /// RTT min/avg/p99. Exits non-zero when nothing answers, the host refuses this identity or
    /// proves another one than --host-id, or no probe is answered.
    Ping {
        /// The host's address (as printed by wavry-server).
        #[arg(short, long, value_name = "HOST:PORT")]
        server: SocketAddr,
        /// This side's identity (.key); an ephemeral one when absent (the host must then
        /// run with --allow-any).
        #[arg(short, long, value_name = "PATH")]
        key: Option<PathBuf>,
        /// The host's Wavry ID: fail unless the host proves exactly this identity.
        #[arg(long, value_name = "WAVRY_ID", allow_hyphen_values = true)]
        host_id: Option<WavryId>,
        /// Probes to send.
        #[arg(short, long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=100_000))]
        count: u32,
        /// Milliseconds between probes.
        #[arg(long, default_value_t = 200)]
        interval_ms: u64,
        /// Seconds to wait for the handshake and for each reply.
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=60))]
        timeout: u64,
        /// Packet I/O backend: auto, uring or portable.
        #[arg(long, env = "WAVRY_IO", default_value = "auto")]
        io: wavry_net::IoMode,
    },
    /// Print version, git commit and the protocols and backends compiled in.
    Version,
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Keygen { output, force } => {
            let key = IdentityKey::generate().context("generating an identity key")?;
            let (k, p) = key.write_files(&output, force)?;
            println!("{}", key.id());
            eprintln!(
                "wrote {} (secret, keep private) and {}",
                k.display(),
                p.display()
            );
        }
        Command::ShowId { key } => {
            let is_secret = key.extension().is_some_and(|e| e == "key");
            let id = if is_secret {
                IdentityKey::load(&key).map(|k| k.id())
            } else {
                WavryId::load(&key)
            }
            .with_context(|| {
                format!(
                    "reading {} (expected a file made by `wavry keygen`)",
                    key.display()
                )
            })?;
            println!("{id}");
        }
        Command::Register(a) => account::register(&a)?,
        Command::Login(a) => account::login(&a)?,
        Command::Ping {
            server,
            key,
            host_id,
            count,
            interval_ms,
            timeout,
            io,
        } => ping(&wavry_runtime::ping::PingOptions {
            server,
            key,
            host_id,
            count,
            interval: Duration::from_millis(interval_ms),
            timeout: Duration::from_secs(timeout),
            io,
        })?,
        Command::Version => {
            println!("wavry {}", env!("CARGO_PKG_VERSION"));
            println!("commit: {}", env!("WAVRY_GIT_HASH"));
            println!("handshake: {NOISE_PARAMS} with mutual Ed25519 identity proofs");
            println!("transport: ChaCha20-Poly1305 (ring), 128-packet replay window");
            println!("relay leases: PASETO v4.public");
            println!(
                "target: {}-{}",
                std::env::consts::ARCH,
                std::env::consts::OS
            );
        }
    }
    Ok(())
}

fn ping(opts: &wavry_runtime::ping::PingOptions) -> anyhow::Result<()> {
    let report = wavry_runtime::ping::ping(opts, |seq, rtt| {
        println!(
            "reply from {}: seq={seq} time={:.3} ms",
            opts.server,
            rtt.as_secs_f64() * 1e3
        );
    })
    .with_context(|| format!("ping {}", opts.server))?;
    let answered = report.rtts.len();
    println!(
        "--- {} ({}) ping: handshake {:.3} ms, {} probes, {} answered, {:.1} % lost",
        opts.server,
        report.peer,
        report.connect.as_secs_f64() * 1e3,
        report.sent,
        answered,
        100.0 * f64::from(report.sent - answered as u32) / f64::from(report.sent.max(1))
    );
    let Some((min, avg, p99)) = report.summary_ms() else {
        anyhow::bail!("ping {}: no probe was answered", opts.server);
    };
    println!("rtt min/avg/p99 = {min:.3}/{avg:.3}/{p99:.3} ms");
    Ok(())
}
