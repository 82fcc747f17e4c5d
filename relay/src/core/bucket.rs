//! Token buckets on a caller-supplied monotonic clock (nanoseconds): refill continuously at
//! `rate` per second up to `burst`, never in fixed one-second windows.

/// A token bucket; the rate and burst are passed on each call so many buckets can share one
/// configuration without storing it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TokenBucket {
    tokens: f64,
    last_ns: u64,
}

impl TokenBucket {
    /// A full bucket of `burst` tokens at `now_ns`.
    pub fn full(burst: f64, now_ns: u64) -> Self {
        Self {
            tokens: burst,
            last_ns: now_ns,
        }
    }

    /// Refills for the time since the last call, then takes `cost` tokens if that many are
    /// there. Time going backwards refills nothing.
    #[inline]
    pub fn take(&mut self, now_ns: u64, rate_per_s: f64, burst: f64, cost: f64) -> bool {
        if now_ns > self.last_ns {
            let dt = (now_ns - self.last_ns) as f64 * 1e-9;
            self.tokens = (self.tokens + dt * rate_per_s).min(burst);
            self.last_ns = now_ns;
        }
        if self.tokens >= cost {
            self.tokens -= cost;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refills_continuously_not_per_window() {
        let mut b = TokenBucket::full(10.0, 0);
        for _ in 0..10 {
            assert!(b.take(0, 100.0, 10.0, 1.0));
        }
        assert!(!b.take(0, 100.0, 10.0, 1.0));
        // 10 ms at 100/s is exactly one token.
        assert!(b.take(10_000_000, 100.0, 10.0, 1.0));
        assert!(!b.take(10_000_000, 100.0, 10.0, 1.0));
        // A long pause refills only up to the burst.
        for _ in 0..10 {
            assert!(b.take(60_000_000_000, 100.0, 10.0, 1.0));
        }
        assert!(!b.take(60_000_000_000, 100.0, 10.0, 1.0));
        // Time going backwards refills nothing.
        assert!(!b.take(1, 100.0, 10.0, 1.0));
    }
}
