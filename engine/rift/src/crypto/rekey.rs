//! Key material for rekeying inside an established session: a fresh ephemeral X25519 exchange
//! (curve25519-dalek) mixed with the session's chain key through HKDF-SHA256, so every new key
//! generation has forward secrecy (the ephemeral secrets and the old chain key are erased) and
//! stays bound to the authenticated handshake (the chain key starts from its split keys).
//!
//! ```text
//! chain_0              = HKDF(salt = handshake hash, ikm = k_i2r ‖ k_r2i, "wavry rekey chain")
//! chain_g ‖ i2r_g ‖ r2i_g = HKDF(salt = chain_{g-1}, ikm = X25519(e_host, e_client),
//!                               info = "wavry rekey" ‖ g (u64 BE) ‖ E_host ‖ E_client)
//! ```

use curve25519_dalek::montgomery::MontgomeryPoint;
use hkdf::Hkdf;
use sha2::Sha256;
use zeroize::{Zeroize, Zeroizing};

use super::{CryptoError, KEY_LEN};

/// Length of an X25519 public key on the wire.
pub const REKEY_PUBLIC_LEN: usize = 32;

/// The secret that links one key generation to the next; erased when replaced.
pub type ChainKey = Zeroizing<[u8; 32]>;

/// Derives the first chain key from a finished handshake's raw split keys and hash.
pub fn initial_chain(i2r: &[u8; KEY_LEN], r2i: &[u8; KEY_LEN], hash: &[u8; 32]) -> ChainKey {
    let mut ikm = Zeroizing::new([0u8; 2 * KEY_LEN]);
    ikm[..KEY_LEN].copy_from_slice(i2r);
    ikm[KEY_LEN..].copy_from_slice(r2i);
    let hk = Hkdf::<Sha256>::new(Some(hash), &ikm[..]);
    let mut out = Zeroizing::new([0u8; 32]);
    // 32 bytes is always a valid HKDF-SHA256 output length.
    hk.expand(b"wavry rekey chain", &mut out[..])
        .unwrap_or_else(|_| unreachable!());
    out
}

/// One side's ephemeral X25519 key pair for one rekey; the secret is zeroized on drop.
pub struct Ephemeral {
    secret: Zeroizing<[u8; 32]>,
    public: [u8; REKEY_PUBLIC_LEN],
}

impl std::fmt::Debug for Ephemeral {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Ephemeral(..)")
    }
}

impl Ephemeral {
    /// Makes a key pair from 32 random bytes (clamped by X25519); the input is wiped.
    pub fn from_random(random: &mut [u8; 32]) -> Self {
        let secret = Zeroizing::new(*random);
        random.zeroize();
        let public = MontgomeryPoint::mul_base_clamped(*secret).to_bytes();
        Self { secret, public }
    }

    /// The public key to send.
    pub fn public(&self) -> &[u8; REKEY_PUBLIC_LEN] {
        &self.public
    }
}

/// The keys of one new generation: direction keys and the next chain key, all zeroized on drop.
#[derive(Debug)]
pub struct NextKeys {
    /// The chain key for the generation after this one.
    pub chain: ChainKey,
    /// Client (Noise initiator) → host key.
    pub i2r: Zeroizing<[u8; KEY_LEN]>,
    /// Host (Noise responder) → client key.
    pub r2i: Zeroizing<[u8; KEY_LEN]>,
}

/// Derives generation `generation` from the previous chain key, our ephemeral and the peer's
/// public key. `host_public`/`client_public` order the two public keys the same way on both
/// sides. A public key of the wrong length or of low order (an all-zero shared secret) is
/// refused.
pub fn derive(
    chain: &[u8; 32],
    ours: &Ephemeral,
    peer_public: &[u8],
    generation: u64,
    we_are_host: bool,
) -> Result<NextKeys, CryptoError> {
    let peer: [u8; REKEY_PUBLIC_LEN] = peer_public
        .try_into()
        .map_err(|_| CryptoError::BadRekey("public key length"))?;
    let shared = Zeroizing::new(MontgomeryPoint(peer).mul_clamped(*ours.secret).to_bytes());
    if shared.iter().all(|&b| b == 0) {
        return Err(CryptoError::BadRekey("low-order public key"));
    }
    let (host_pub, client_pub) = if we_are_host {
        (&ours.public, &peer)
    } else {
        (&peer, &ours.public)
    };
    let mut info = [0u8; 11 + 8 + 2 * REKEY_PUBLIC_LEN];
    info[..11].copy_from_slice(b"wavry rekey");
    info[11..19].copy_from_slice(&generation.to_be_bytes());
    info[19..51].copy_from_slice(host_pub);
    info[51..].copy_from_slice(client_pub);
    let hk = Hkdf::<Sha256>::new(Some(chain), &shared[..]);
    let mut okm = Zeroizing::new([0u8; 96]);
    hk.expand(&info, &mut okm[..])
        .unwrap_or_else(|_| unreachable!());
    let mut keys = NextKeys {
        chain: Zeroizing::new([0; 32]),
        i2r: Zeroizing::new([0; KEY_LEN]),
        r2i: Zeroizing::new([0; KEY_LEN]),
    };
    keys.chain.copy_from_slice(&okm[..32]);
    keys.i2r.copy_from_slice(&okm[32..64]);
    keys.r2i.copy_from_slice(&okm[64..]);
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_sides_derive_the_same_keys_and_generations_differ() {
        let chain = initial_chain(&[1; 32], &[2; 32], &[3; 32]);
        let h = Ephemeral::from_random(&mut [7; 32]);
        let c = Ephemeral::from_random(&mut [9; 32]);
        let kh = derive(&chain, &h, c.public(), 1, true).unwrap();
        let kc = derive(&chain, &c, h.public(), 1, false).unwrap();
        assert_eq!(*kh.i2r, *kc.i2r);
        assert_eq!(*kh.r2i, *kc.r2i);
        assert_eq!(*kh.chain, *kc.chain);
        assert_ne!(*kh.i2r, *kh.r2i);
        let k2 = derive(&chain, &h, c.public(), 2, true).unwrap();
        assert_ne!(*k2.i2r, *kh.i2r);
        // Another chain key (another session) gives other keys from the same ephemerals.
        let other = initial_chain(&[1; 32], &[2; 32], &[4; 32]);
        assert_ne!(
            *derive(&other, &h, c.public(), 1, true).unwrap().i2r,
            *kh.i2r
        );
    }

    #[test]
    fn bad_public_keys_are_refused() {
        let chain = initial_chain(&[1; 32], &[2; 32], &[3; 32]);
        let h = Ephemeral::from_random(&mut [7; 32]);
        assert_eq!(
            derive(&chain, &h, &[5; 31], 1, true).unwrap_err(),
            CryptoError::BadRekey("public key length")
        );
        // The identity point (all zero) gives an all-zero shared secret.
        assert_eq!(
            derive(&chain, &h, &[0; 32], 1, true).unwrap_err(),
            CryptoError::BadRekey("low-order public key")
        );
    }

    #[test]
    fn random_input_is_wiped() {
        let mut r = [7u8; 32];
        let _ = Ephemeral::from_random(&mut r);
        assert_eq!(r, [0; 32]);
    }
}
