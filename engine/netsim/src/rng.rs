//! A small seeded PRNG (xoshiro256++ seeded through SplitMix64).
//!
//! Written out here rather than pulled from `rand` so that the simulator's random streams are
//! fixed by this file alone: a dependency upgrade can never change which packets a seed loses.

use std::net::SocketAddr;

/// xoshiro256++ generator. Not cryptographic; fast and statistically sound for simulation.
#[derive(Debug, Clone)]
pub(crate) struct Rng {
    s: [u64; 4],
}

/// One SplitMix64 step: advances `state` and returns a well-mixed output.
fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl Rng {
    /// Seeds the four state words from `seed` via SplitMix64 (never all zero in practice).
    pub(crate) fn new(seed: u64) -> Self {
        let mut sm = seed;
        Self {
            s: [
                splitmix64(&mut sm),
                splitmix64(&mut sm),
                splitmix64(&mut sm),
                splitmix64(&mut sm),
            ],
        }
    }

    /// Seeds a link's generator from the simulator seed and the link's endpoints, so each link
    /// has its own stream: adding a link or traffic on one link never perturbs another.
    pub(crate) fn for_link(seed: u64, from: SocketAddr, to: SocketAddr) -> Self {
        // FNV-1a over a stable byte encoding of both addresses.
        let mut h: u64 = 0xCBF2_9CE4_8422_2325;
        let mut eat = |b: u8| {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01B3);
        };
        for addr in [from, to] {
            match addr {
                SocketAddr::V4(a) => {
                    eat(4);
                    a.ip().octets().into_iter().for_each(&mut eat);
                }
                SocketAddr::V6(a) => {
                    eat(6);
                    a.ip().octets().into_iter().for_each(&mut eat);
                }
            }
            addr.port().to_be_bytes().into_iter().for_each(&mut eat);
        }
        let mut sm = seed ^ h;
        Self::new(splitmix64(&mut sm))
    }

    /// Next 64 random bits.
    pub(crate) fn next_u64(&mut self) -> u64 {
        let [s0, s1, s2, s3] = &mut self.s;
        let result = s0.wrapping_add(*s3).rotate_left(23).wrapping_add(*s0);
        let t = *s1 << 17;
        *s2 ^= *s0;
        *s3 ^= *s1;
        *s1 ^= *s2;
        *s0 ^= *s3;
        *s2 ^= t;
        *s3 = s3.rotate_left(45);
        result
    }

    /// Uniform `f64` in `[0, 1)` with 53 bits of precision.
    pub(crate) fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

/// Maps 64 random bits onto `0..n` by multiply-high (bias below `n / 2^64`, negligible here).
pub(crate) fn below(bits: u64, n: u64) -> u64 {
    ((u128::from(bits) * u128::from(n)) >> 64) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_stream_and_uniform_mean() {
        let mut a = Rng::new(7);
        let mut b = Rng::new(7);
        let mut sum = 0.0;
        for _ in 0..10_000 {
            let x = a.next_f64();
            assert_eq!(x.to_bits(), b.next_f64().to_bits());
            assert!((0.0..1.0).contains(&x));
            sum += x;
        }
        assert!((sum / 10_000.0 - 0.5).abs() < 0.02);
        assert_ne!(Rng::new(8).next_u64(), Rng::new(7).next_u64());
    }

    #[test]
    fn below_stays_in_range() {
        let mut r = Rng::new(1);
        for _ in 0..1000 {
            assert!(below(r.next_u64(), 17) < 17);
        }
        assert_eq!(below(u64::MAX, 8), 7);
        assert_eq!(below(0, 8), 0);
    }

    #[test]
    fn links_get_distinct_streams() {
        let a: SocketAddr = "10.0.0.1:1000".parse().unwrap();
        let b: SocketAddr = "10.0.0.2:2000".parse().unwrap();
        assert_ne!(
            Rng::for_link(1, a, b).next_u64(),
            Rng::for_link(1, b, a).next_u64()
        );
        assert_eq!(
            Rng::for_link(1, a, b).next_u64(),
            Rng::for_link(1, a, b).next_u64()
        );
    }
}
