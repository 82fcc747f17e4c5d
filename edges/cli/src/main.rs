//! `wavry`: identity keys and Wavry IDs, build information.

use std::path::PathBuf;

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
    about = "Wavry command-line tools: identity keys, Wavry IDs, build info"
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
