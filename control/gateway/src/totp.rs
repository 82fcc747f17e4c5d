//! TOTP (RFC 6238 via `totp-rs`: SHA-1, 6 digits, 30 s, ±1 step) and encryption of secrets at
//! rest: `"enc:v2:" + base64(nonce12 ‖ ChaCha20-Poly1305(secret_base32, aad = user id))` with a
//! 32-byte key from `WAVRY_TOTP_KEY_B64`, else `WAVRY_TOTP_KEY_FILE`, else
//! `<data-dir>/totp.key` (generated and persisted, 0600, on first start).

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use base64::{Engine, engine::general_purpose::STANDARD};
use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, Nonce, UnboundKey};
use totp_rs::{Algorithm, Secret, TOTP};

const PREFIX: &str = "enc:v2:";

/// The at-rest key.
pub(crate) struct TotpKey(LessSafeKey);

impl TotpKey {
    /// Loads or creates the key (never logged).
    pub(crate) fn load(data_dir: &Path) -> anyhow::Result<Self> {
        let raw = if let Some(b64) = wavry_control_core::env_str("WAVRY_TOTP_KEY_B64") {
            STANDARD
                .decode(b64)
                .context("WAVRY_TOTP_KEY_B64 is not base64")?
        } else {
            let path = wavry_control_core::env_str("WAVRY_TOTP_KEY_FILE")
                .map_or_else(|| data_dir.join("totp.key"), PathBuf::from);
            if path.exists() {
                STANDARD
                    .decode(std::fs::read_to_string(&path)?.trim())
                    .with_context(|| format!("{} is not base64", path.display()))?
            } else {
                let key = wavry_control_core::random_bytes::<32>()?;
                write_secret(&path, &STANDARD.encode(key))?;
                tracing::info!(path = %path.display(), "generated and persisted a TOTP encryption key");
                key.to_vec()
            }
        };
        if raw.len() != 32 {
            bail!("TOTP key must be 32 bytes, got {}", raw.len());
        }
        let key = UnboundKey::new(&CHACHA20_POLY1305, &raw)
            .map_err(|_| anyhow::anyhow!("bad TOTP key"))?;
        Ok(Self(LessSafeKey::new(key)))
    }

    /// Encrypts a base32 secret for `user_id`.
    pub(crate) fn seal(&self, user_id: &str, secret_b32: &str) -> anyhow::Result<String> {
        let nonce_bytes = wavry_control_core::random_bytes::<12>()?;
        let mut buf = secret_b32.as_bytes().to_vec();
        self.0
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce_bytes),
                Aad::from(user_id.as_bytes()),
                &mut buf,
            )
            .map_err(|_| anyhow::anyhow!("seal failed"))?;
        let mut out = nonce_bytes.to_vec();
        out.extend_from_slice(&buf);
        Ok(format!("{PREFIX}{}", STANDARD.encode(out)))
    }

    /// Decrypts a stored secret for `user_id`.
    pub(crate) fn open(&self, user_id: &str, stored: &str) -> anyhow::Result<String> {
        let body = stored
            .strip_prefix(PREFIX)
            .context("unknown TOTP secret format")?;
        let mut raw = STANDARD.decode(body)?;
        if raw.len() < 12 + 16 {
            bail!("TOTP ciphertext too short");
        }
        let mut ct = raw.split_off(12);
        let nonce: [u8; 12] = raw.as_slice().try_into()?;
        let pt = self
            .0
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(user_id.as_bytes()),
                &mut ct,
            )
            .map_err(|_| anyhow::anyhow!("TOTP secret does not decrypt (wrong WAVRY_TOTP_KEY?)"))?;
        Ok(String::from_utf8(pt.to_vec())?)
    }
}

fn write_secret(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
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
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    Ok(())
}

/// A new 20-byte secret, base32 without padding.
pub(crate) fn new_secret() -> anyhow::Result<String> {
    match Secret::Raw(wavry_control_core::random_bytes::<20>()?.to_vec()).to_encoded() {
        Secret::Encoded(s) => Ok(s),
        Secret::Raw(_) => bail!("secret encoding failed"),
    }
}

fn totp_for(secret_b32: &str) -> Option<TOTP> {
    let bytes = Secret::Encoded(secret_b32.trim().to_ascii_uppercase())
        .to_bytes()
        .ok()?;
    if bytes.len() < 16 {
        return None;
    }
    TOTP::new(Algorithm::SHA1, 6, 1, 30, bytes).ok()
}

/// Whether a base32 secret is acceptable (≥ 128 bits).
pub(crate) fn secret_ok(secret_b32: &str) -> bool {
    totp_for(secret_b32).is_some()
}

/// Whether `code` looks like a TOTP code (6 digits).
pub(crate) fn code_well_formed(code: &str) -> bool {
    code.len() == 6 && code.bytes().all(|b| b.is_ascii_digit())
}

/// Checks `code` against steps now−1..now+1 that are newer than `last_step` (no replay);
/// returns the matching step.
pub(crate) fn check(secret_b32: &str, code: &str, now_unix: u64, last_step: i64) -> Option<i64> {
    let totp = totp_for(secret_b32)?;
    let step = now_unix / 30;
    (step.saturating_sub(1)..=step + 1).find_map(|s| {
        let s_i = i64::try_from(s).ok()?;
        (s_i > last_step
            && wavry_control_core::ct_eq(totp.generate(s * 30).as_bytes(), code.as_bytes()))
        .then_some(s_i)
    })
}

/// `otpauth://` URL for authenticator apps.
pub(crate) fn otpauth_url(secret_b32: &str, email: &str) -> String {
    let enc = |s: &str| {
        s.bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect::<String>()
    };
    format!(
        "otpauth://totp/Wavry:{}?secret={secret_b32}&issuer=Wavry&algorithm=SHA1&digits=6&period=30",
        enc(email)
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn codes_check_once_and_secrets_round_trip() {
        let s = new_secret().unwrap();
        assert!(secret_ok(&s));
        let t = totp_for(&s).unwrap();
        let now = 1_700_000_000;
        let code = t.generate(now);
        let step = check(&s, &code, now, 0).unwrap();
        assert!(check(&s, &code, now, step).is_none(), "replay refused");
        assert!(check(&s, "000000", now, 0).is_none() || code == "000000");
        let dir = std::env::temp_dir().join(format!("wavry-totp-{}", std::process::id()));
        let key = TotpKey::load(&dir).unwrap();
        let sealed = key.seal("u1", &s).unwrap();
        assert_eq!(key.open("u1", &sealed).unwrap(), s);
        assert!(key.open("u2", &sealed).is_err(), "bound to the user");
        let again = TotpKey::load(&dir).unwrap();
        assert_eq!(again.open("u1", &sealed).unwrap(), s, "persisted key");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
