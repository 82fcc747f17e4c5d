//! 128-packet sliding anti-replay window (spec RIFT §3.5), one per direction per session.
//! The relay uses the same type per peer. `check` runs before decryption; `update` only after
//! the AEAD has authenticated the packet, so forged packet ids cannot move the window.

/// Width of the window in packet ids.
pub const WINDOW: u64 = 128;

/// Why a packet id was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ReplayError {
    /// At or below `highest - 128`: too old to tell, refused.
    #[error("packet id {0} is older than the replay window")]
    TooOld(u64),
    /// Already seen.
    #[error("packet id {0} was already received")]
    Duplicate(u64),
}

/// Sliding window: the highest id seen and a bitmap of the 128 ids at and below it
/// (bit 0 = `highest`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReplayWindow {
    highest: u64,
    bitmap: u128,
}

impl ReplayWindow {
    /// An empty window; the first packet is always accepted.
    pub const fn new() -> Self {
        Self {
            highest: 0,
            bitmap: 0,
        }
    }

    /// Highest packet id accepted so far (0 before any).
    pub fn highest(&self) -> u64 {
        self.highest
    }

    /// Would `seq` be accepted? Does not change the window.
    pub fn check(&self, seq: u64) -> Result<(), ReplayError> {
        if self.bitmap == 0 || seq > self.highest {
            return Ok(());
        }
        let back = self.highest - seq;
        if back >= WINDOW {
            return Err(ReplayError::TooOld(seq));
        }
        if self.bitmap & (1u128 << back) != 0 {
            return Err(ReplayError::Duplicate(seq));
        }
        Ok(())
    }

    /// Records `seq` as received. Call only after `check` succeeded and the packet authenticated.
    pub fn update(&mut self, seq: u64) {
        if self.bitmap == 0 {
            self.highest = seq;
            self.bitmap = 1;
        } else if seq > self.highest {
            let shift = seq - self.highest;
            self.bitmap = if shift >= WINDOW {
                1
            } else {
                (self.bitmap << shift) | 1
            };
            self.highest = seq;
        } else {
            let back = self.highest - seq;
            if back < WINDOW {
                self.bitmap |= 1u128 << back;
            }
        }
    }

    /// `check` then `update`, for callers that have already authenticated the packet.
    pub fn check_and_update(&mut self, seq: u64) -> Result<(), ReplayError> {
        self.check(seq)?;
        self.update(seq);
        Ok(())
    }

    /// Forgets everything (used when a handshake completes).
    pub fn reset(&mut self) {
        *self = Self::new();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_reordering_inside_window_and_rejects_duplicates() {
        let mut w = ReplayWindow::new();
        for seq in [1, 3, 2, 10, 5] {
            w.check_and_update(seq).unwrap();
        }
        assert_eq!(w.check_and_update(3), Err(ReplayError::Duplicate(3)));
        assert_eq!(w.check_and_update(10), Err(ReplayError::Duplicate(10)));
        w.check_and_update(4).unwrap();
    }

    #[test]
    fn rejects_too_old_and_resets_on_big_jump() {
        let mut w = ReplayWindow::new();
        w.check_and_update(1).unwrap();
        w.check_and_update(200).unwrap();
        assert_eq!(w.check(72), Err(ReplayError::TooOld(72)));
        w.check_and_update(73).unwrap();
        w.check_and_update(10_000).unwrap();
        assert_eq!(w.check(200), Err(ReplayError::TooOld(200)));
        w.check_and_update(9_999).unwrap();
    }

    #[test]
    fn check_does_not_mutate() {
        let mut w = ReplayWindow::new();
        w.update(5);
        w.check(6).unwrap();
        w.check(6).unwrap();
        assert_eq!(w.highest(), 5);
    }

    #[test]
    fn matches_a_set_model() {
        // Deterministic pseudo-random walk compared against a brute-force model.
        let mut w = ReplayWindow::new();
        let mut seen = std::collections::BTreeSet::<u64>::new();
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let hi = seen.iter().next_back().copied().unwrap_or(0);
            let seq = (hi + 64).saturating_sub(x % 200).max(1);
            let expect_ok = seen.is_empty() || (!seen.contains(&seq) && seq + WINDOW > hi);
            assert_eq!(
                w.check_and_update(seq).is_ok(),
                expect_ok,
                "seq {seq} hi {hi}"
            );
            if expect_ok {
                seen.insert(seq);
            }
        }
    }
}
