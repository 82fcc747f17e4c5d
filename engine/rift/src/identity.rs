//! Ed25519 identities. A Wavry ID is the 43-character unpadded base64url form of the 32-byte
//! public key. Key files: `<prefix>.key` holds the raw 32-byte seed (mode 0600),
//! `<prefix>.pub` the raw 32-byte public key.

use std::{fmt, fs, io::Write, path::Path, str::FromStr};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use ring::{
    rand::{SecureRandom, SystemRandom},
    signature::{ED25519, Ed25519KeyPair, KeyPair, UnparsedPublicKey},
};

/// Length of an Ed25519 signature.
pub const SIGNATURE_LEN: usize = 64;

/// Identity errors: parsing IDs, reading and writing key files, signatures.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// The text is not a 43-character base64url encoding of 32 bytes.
    #[error("invalid Wavry ID: {0}")]
    BadId(&'static str),
    /// A key file does not hold exactly 32 bytes.
    #[error("{path}: expected a 32-byte key file, found {len} bytes")]
    BadKeyFile { path: String, len: usize },
    /// The key file exists and `force` was not given.
    #[error("{0} already exists (pass --force to overwrite)")]
    Exists(String),
    /// Reading or writing a key file failed.
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    /// The system random generator failed.
    #[error("system random number generator failed")]
    Rng,
    /// The seed was rejected by the Ed25519 implementation.
    #[error("invalid Ed25519 seed")]
    BadSeed,
    /// A signature did not verify against the claimed identity.
    #[error("signature does not verify for {0}")]
    BadSignature(WavryId),
}

/// A peer's public identity: an Ed25519 public key, shown as its Wavry ID.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WavryId([u8; 32]);

impl WavryId {
    /// Wraps raw public key bytes.
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The raw 32-byte Ed25519 public key.
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Verifies an Ed25519 signature made by this identity.
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> Result<(), IdentityError> {
        UnparsedPublicKey::new(&ED25519, &self.0)
            .verify(message, signature)
            .map_err(|_| IdentityError::BadSignature(*self))
    }

    /// Reads a `.pub` file (raw 32 bytes).
    pub fn load(path: &Path) -> Result<Self, IdentityError> {
        read_32(path).map(Self)
    }
}

impl fmt::Display for WavryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut buf = [0u8; 43];
        let n = URL_SAFE_NO_PAD
            .encode_slice(self.0, &mut buf)
            .map_err(|_| fmt::Error)?;
        f.write_str(std::str::from_utf8(&buf[..n]).map_err(|_| fmt::Error)?)
    }
}

impl fmt::Debug for WavryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "WavryId({self})")
    }
}

impl FromStr for WavryId {
    type Err = IdentityError;
    fn from_str(s: &str) -> Result<Self, IdentityError> {
        if s.len() != 43 {
            return Err(IdentityError::BadId("must be 43 characters"));
        }
        let mut out = [0u8; 33];
        let n = URL_SAFE_NO_PAD
            .decode_slice(s, &mut out)
            .map_err(|_| IdentityError::BadId("not unpadded base64url"))?;
        if n != 32 {
            return Err(IdentityError::BadId("must decode to 32 bytes"));
        }
        let mut id = [0u8; 32];
        id.copy_from_slice(&out[..32]);
        Ok(Self(id))
    }
}

/// A private Ed25519 identity key. `Debug` shows only the public ID.
pub struct IdentityKey {
    seed: [u8; 32],
    pair: Ed25519KeyPair,
}

impl Drop for IdentityKey {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.seed);
    }
}

impl fmt::Debug for IdentityKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IdentityKey")
            .field("id", &self.id())
            .finish_non_exhaustive()
    }
}

impl IdentityKey {
    /// A fresh key from the operating system's random generator.
    pub fn generate() -> Result<Self, IdentityError> {
        let mut seed = [0u8; 32];
        SystemRandom::new()
            .fill(&mut seed)
            .map_err(|_| IdentityError::Rng)?;
        Self::from_seed(seed)
    }

    /// The key for a 32-byte seed.
    pub fn from_seed(seed: [u8; 32]) -> Result<Self, IdentityError> {
        let pair =
            Ed25519KeyPair::from_seed_unchecked(&seed).map_err(|_| IdentityError::BadSeed)?;
        Ok(Self { seed, pair })
    }

    /// The raw seed (secret). Handle with care.
    pub fn seed(&self) -> &[u8; 32] {
        &self.seed
    }

    /// This key's public identity.
    pub fn id(&self) -> WavryId {
        let mut pk = [0u8; 32];
        pk.copy_from_slice(self.pair.public_key().as_ref());
        WavryId(pk)
    }

    /// Signs `message`.
    pub fn sign(&self, message: &[u8]) -> [u8; SIGNATURE_LEN] {
        let mut sig = [0u8; SIGNATURE_LEN];
        sig.copy_from_slice(self.pair.sign(message).as_ref());
        sig
    }

    /// Reads a `.key` file (raw 32-byte seed).
    pub fn load(path: &Path) -> Result<Self, IdentityError> {
        Self::from_seed(read_32(path)?)
    }

    /// Writes `<prefix>.key` (0600 on Unix) and `<prefix>.pub`. Refuses to replace existing
    /// files unless `force`. Returns the two paths.
    pub fn write_files(
        &self,
        prefix: &Path,
        force: bool,
    ) -> Result<(std::path::PathBuf, std::path::PathBuf), IdentityError> {
        let key_path = with_suffix(prefix, "key");
        let pub_path = with_suffix(prefix, "pub");
        if !force {
            for p in [&key_path, &pub_path] {
                if p.exists() {
                    return Err(IdentityError::Exists(p.display().to_string()));
                }
            }
        }
        write_file(&key_path, &self.seed, true)?;
        write_file(&pub_path, self.id().as_bytes(), false)?;
        Ok((key_path, pub_path))
    }
}

fn with_suffix(prefix: &Path, ext: &str) -> std::path::PathBuf {
    let mut s = prefix.as_os_str().to_owned();
    s.push(".");
    s.push(ext);
    s.into()
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> IdentityError + '_ {
    move |source| IdentityError::Io {
        path: path.display().to_string(),
        source,
    }
}

fn read_32(path: &Path) -> Result<[u8; 32], IdentityError> {
    let bytes = fs::read(path).map_err(io_err(path))?;
    bytes
        .as_slice()
        .try_into()
        .map_err(|_| IdentityError::BadKeyFile {
            path: path.display().to_string(),
            len: bytes.len(),
        })
}

fn write_file(path: &Path, bytes: &[u8], secret: bool) -> Result<(), IdentityError> {
    let mut opts = fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        opts.mode(if secret { 0o600 } else { 0o644 });
        let mut f = opts.open(path).map_err(io_err(path))?;
        // An existing file keeps its old mode on open: tighten it explicitly.
        f.set_permissions(fs::Permissions::from_mode(if secret {
            0o600
        } else {
            0o644
        }))
        .map_err(io_err(path))?;
        f.write_all(bytes).map_err(io_err(path))?;
        f.sync_all().map_err(io_err(path))
    }
    #[cfg(not(unix))]
    {
        let _ = secret;
        let mut f = opts.open(path).map_err(io_err(path))?;
        f.write_all(bytes).map_err(io_err(path))?;
        f.sync_all().map_err(io_err(path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_round_trips_and_is_43_chars() {
        let k = IdentityKey::generate().unwrap();
        let s = k.id().to_string();
        assert_eq!(s.len(), 43);
        assert_eq!(s.parse::<WavryId>().unwrap(), k.id());
    }

    #[test]
    fn bad_ids_are_refused() {
        assert!("short".parse::<WavryId>().is_err());
        assert!("A".repeat(44).parse::<WavryId>().is_err());
        assert!("+".repeat(43).parse::<WavryId>().is_err());
    }

    #[test]
    fn signatures_verify_only_for_the_signer() {
        let a = IdentityKey::from_seed([1; 32]).unwrap();
        let b = IdentityKey::from_seed([2; 32]).unwrap();
        let sig = a.sign(b"hello");
        a.id().verify(b"hello", &sig).unwrap();
        assert!(b.id().verify(b"hello", &sig).is_err());
        assert!(a.id().verify(b"hellO", &sig).is_err());
    }

    #[test]
    fn key_files_round_trip_with_private_mode_and_no_silent_overwrite() {
        let dir = std::env::temp_dir().join(format!("wavry-id-test-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let prefix = dir.join("host");
        let k = IdentityKey::generate().unwrap();
        let (kp, pp) = k.write_files(&prefix, false).unwrap();
        assert_eq!(IdentityKey::load(&kp).unwrap().id(), k.id());
        assert_eq!(WavryId::load(&pp).unwrap(), k.id());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(
                fs::metadata(&kp).unwrap().permissions().mode() & 0o777,
                0o600
            );
        }
        let other = IdentityKey::generate().unwrap();
        assert!(matches!(
            other.write_files(&prefix, false),
            Err(IdentityError::Exists(_))
        ));
        other.write_files(&prefix, true).unwrap();
        assert_eq!(WavryId::load(&pp).unwrap(), other.id());
        fs::write(&pp, [0u8; 31]).unwrap();
        assert!(matches!(
            WavryId::load(&pp),
            Err(IdentityError::BadKeyFile { len: 31, .. })
        ));
        fs::remove_dir_all(&dir).unwrap();
    }
}
