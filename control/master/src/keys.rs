//! The master's lease signing key: `WAVRY_MASTER_SIGNING_KEY` (hex), else
//! `WAVRY_MASTER_KEY_FILE` (file with hex), else `<data-dir>/master-signing.key`; a file that
//! does not exist yet is generated and persisted (0600) so a restart keeps the key.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use wavry_rift::identity::IdentityKey;

/// A loaded key and whether it is persistent (provisioned).
pub(crate) struct LoadedKey {
    pub(crate) key: IdentityKey,
    pub(crate) provisioned: bool,
    pub(crate) source: String,
}

/// Parses 32-byte seed hex or 64-byte seed‖public hex (the public half must match).
fn parse_hex_key(text: &str) -> anyhow::Result<IdentityKey> {
    let bytes = hex::decode(text.trim()).context("signing key is not hex")?;
    let seed: [u8; 32] = match bytes.len() {
        32 | 64 => bytes[..32].try_into().context("seed")?,
        n => bail!("signing key must be 32 (seed) or 64 (seed||public) bytes, got {n}"),
    };
    let key = IdentityKey::from_seed(seed).context("invalid Ed25519 seed")?;
    if bytes.len() == 64 && key.id().as_bytes()[..] != bytes[32..] {
        bail!("signing key: public half does not match the seed");
    }
    Ok(key)
}

fn write_new(path: &Path) -> anyhow::Result<IdentityKey> {
    use std::io::Write;
    let key = IdentityKey::generate().context("generating signing key")?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    let mut text = hex::encode(key.seed());
    text.push_str(&hex::encode(key.id().as_bytes()));
    text.push('\n');
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    Ok(key)
}

/// Loads or creates the signing key. Never logs key material.
pub(crate) fn load(data_dir: &Path) -> anyhow::Result<LoadedKey> {
    if let Some(hex_key) = wavry_control_core::env_str("WAVRY_MASTER_SIGNING_KEY") {
        return Ok(LoadedKey {
            key: parse_hex_key(&hex_key)?,
            provisioned: true,
            source: "WAVRY_MASTER_SIGNING_KEY".into(),
        });
    }
    let path = wavry_control_core::env_str("WAVRY_MASTER_KEY_FILE")
        .map_or_else(|| data_dir.join("master-signing.key"), PathBuf::from);
    if path.exists() {
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        return Ok(LoadedKey {
            key: parse_hex_key(&text)?,
            provisioned: true,
            source: path.display().to_string(),
        });
    }
    match write_new(&path) {
        Ok(key) => {
            tracing::info!(path = %path.display(), "generated and persisted a new lease signing key");
            Ok(LoadedKey {
                key,
                provisioned: true,
                source: path.display().to_string(),
            })
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot persist a signing key; using an ephemeral one (not ready)");
            Ok(LoadedKey {
                key: IdentityKey::generate().context("generating key")?,
                provisioned: false,
                source: "ephemeral".into(),
            })
        }
    }
}
