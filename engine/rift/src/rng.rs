//! Randomness for sessions and endpoints: the OS generator in production, or a ChaCha20 stream
//! from a seed so that netsim runs (handshake ids, ephemeral keys, cookie secrets, ids in
//! messages) are byte-for-byte reproducible.

use std::cell::RefCell;

use rand_chacha::{
    ChaCha20Rng,
    rand_core::{RngCore, SeedableRng},
};
use ring::rand::{SecureRandom, SystemRandom};

/// A source of random bytes owned by one session or endpoint.
#[derive(Debug, Clone)]
pub enum Rng {
    /// The operating system's generator.
    Os,
    /// A deterministic ChaCha20 stream (tests and simulations only).
    Seeded(Box<ChaCha20Rng>),
}

impl Rng {
    /// The OS generator, or a seeded stream when `seed` is given.
    pub fn new(seed: Option<u64>) -> Self {
        seed.map_or(Self::Os, |s| {
            Self::Seeded(Box::new(ChaCha20Rng::seed_from_u64(s)))
        })
    }

    /// Fills `buf` with random bytes.
    pub fn fill(&mut self, buf: &mut [u8]) {
        match self {
            // The OS generator failing is not recoverable; a zeroed buffer is still handled
            // safely by every caller (ids, nonces-to-be-mixed, secrets rotated later).
            Self::Os => {
                let _ = SystemRandom::new().fill(buf);
            }
            Self::Seeded(r) => r.fill_bytes(buf),
        }
    }

    /// `N` random bytes.
    pub fn bytes<const N: usize>(&mut self) -> [u8; N] {
        let mut b = [0u8; N];
        self.fill(&mut b);
        b
    }

    /// An independent generator: the OS again, or a child stream seeded from this one (so the
    /// order of forks, not timing, decides every child's output).
    #[must_use]
    pub fn fork(&mut self) -> Self {
        match self {
            Self::Os => Self::Os,
            Self::Seeded(r) => {
                let mut seed = [0u8; 32];
                r.fill_bytes(&mut seed);
                Self::Seeded(Box::new(ChaCha20Rng::from_seed(seed)))
            }
        }
    }
}

impl snow::types::Random for Rng {
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), snow::Error> {
        self.fill(dest);
        Ok(())
    }
}

/// A snow resolver whose random numbers (static and ephemeral keys) come from an [`Rng`];
/// every primitive comes from snow's default resolver.
pub(crate) struct NoiseResolver {
    rng: RefCell<Rng>,
    default: snow::resolvers::DefaultResolver,
}

impl NoiseResolver {
    pub(crate) fn new(rng: Rng) -> Self {
        Self {
            rng: RefCell::new(rng),
            default: snow::resolvers::DefaultResolver,
        }
    }
}

impl snow::resolvers::CryptoResolver for NoiseResolver {
    fn resolve_rng(&self) -> Option<Box<dyn snow::types::Random>> {
        Some(Box::new(self.rng.borrow_mut().fork()))
    }

    fn resolve_dh(&self, choice: &snow::params::DHChoice) -> Option<Box<dyn snow::types::Dh>> {
        self.default.resolve_dh(choice)
    }

    fn resolve_hash(
        &self,
        choice: &snow::params::HashChoice,
    ) -> Option<Box<dyn snow::types::Hash>> {
        self.default.resolve_hash(choice)
    }

    fn resolve_cipher(
        &self,
        choice: &snow::params::CipherChoice,
    ) -> Option<Box<dyn snow::types::Cipher>> {
        self.default.resolve_cipher(choice)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeded_streams_repeat_and_forks_differ() {
        let (mut a, mut b) = (Rng::new(Some(7)), Rng::new(Some(7)));
        assert_eq!(a.bytes::<32>(), b.bytes::<32>());
        let (mut fa, mut fb) = (a.fork(), b.fork());
        assert_eq!(fa.bytes::<16>(), fb.bytes::<16>());
        assert_ne!(fa.bytes::<16>(), a.bytes::<16>());
        assert_ne!(
            Rng::new(Some(8)).bytes::<16>(),
            Rng::new(Some(7)).bytes::<16>()
        );
    }
}
