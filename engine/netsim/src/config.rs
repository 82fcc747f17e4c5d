//! Link configuration: propagation, impairments and the bottleneck.

use std::fmt;
use std::time::Duration;

use crate::NetsimError;

/// A link capacity in bits per second.
///
/// A newtype so that bits and bytes cannot be confused at call sites. A rate of zero is allowed
/// and models an outage: packets wait in the bottleneck queue (and tail-drop once it is full)
/// until the rate is raised again with [`crate::Netsim::set_rate`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Rate(u64);

impl Rate {
    /// `n` bits per second.
    pub const fn bps(n: u64) -> Self {
        Self(n)
    }

    /// `n` kilobits (10^3 bits) per second.
    pub const fn kbps(n: u64) -> Self {
        Self(n * 1_000)
    }

    /// `n` megabits (10^6 bits) per second.
    pub const fn mbps(n: u64) -> Self {
        Self(n * 1_000_000)
    }

    /// `n` gigabits (10^9 bits) per second.
    pub const fn gbps(n: u64) -> Self {
        Self(n * 1_000_000_000)
    }

    /// The rate in bits per second.
    pub const fn as_bps(self) -> u64 {
        self.0
    }

    /// Time to serialise `bytes` at this rate, `ceil(bytes * 8 / rate)` in nanoseconds; `None`
    /// when the rate is zero (the packet cannot start until the rate changes).
    pub(crate) fn serialization_ns(self, bytes: usize) -> Option<u64> {
        if self.0 == 0 {
            return None;
        }
        let bits = bytes as u128 * 8 * 1_000_000_000;
        let ns = bits.div_ceil(u128::from(self.0));
        Some(u64::try_from(ns).unwrap_or(u64::MAX))
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} bit/s", self.0)
    }
}

/// Which datagrams a link loses before they reach its bottleneck queue.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum LossModel {
    /// No random loss.
    #[default]
    None,
    /// Each datagram is lost independently with probability `p`.
    Bernoulli(f64),
    /// Two-state Markov (Gilbert–Elliott) loss, for bursty loss such as Wi-Fi fades.
    ///
    /// Each datagram is lost with the loss probability of the current state (`loss_good` or
    /// `loss_bad`); then the state moves good→bad with probability `p_gb` or bad→good with
    /// probability `p_bg`. The chain starts in the good state. Stationary bad-state share:
    /// `π_B = p_gb / (p_gb + p_bg)`; mean loss `(1 − π_B)·loss_good + π_B·loss_bad`
    /// (see [`LossModel::mean_loss`]).
    GilbertElliott {
        /// Probability of moving from the good to the bad state after a datagram.
        p_gb: f64,
        /// Probability of moving from the bad to the good state after a datagram.
        p_bg: f64,
        /// Loss probability while in the good state.
        loss_good: f64,
        /// Loss probability while in the bad state.
        loss_bad: f64,
    },
}

impl LossModel {
    /// Gilbert–Elliott parameters for a target long-run `mean_loss` and mean loss-burst length
    /// `mean_burst_len` (in datagrams).
    ///
    /// Uses `loss_good = 0`, `loss_bad = 1`, so bursts are exactly the bad-state sojourns, whose
    /// length is geometric with mean `1 / p_bg`:
    ///
    /// * `p_bg = 1 / mean_burst_len`
    /// * `p_gb = p_bg · mean_loss / (1 − mean_loss)` (solving `π_B = p_gb / (p_gb + p_bg) = mean_loss`)
    ///
    /// Edge cases: `mean_loss <= 0` (or NaN) gives [`LossModel::None`], `mean_loss >= 1` gives
    /// `Bernoulli(1.0)`, `mean_burst_len` is raised to at least 1, and `p_gb` is capped at 1
    /// (a good state lasts at least one datagram, so the largest reachable mean loss for a burst
    /// length `L` is `L / (L + 1)`).
    pub fn bursty(mean_loss: f64, mean_burst_len: f64) -> Self {
        if mean_loss.is_nan() || mean_loss <= 0.0 {
            return Self::None;
        }
        if mean_loss >= 1.0 {
            return Self::Bernoulli(1.0);
        }
        let burst = if mean_burst_len.is_nan() {
            1.0
        } else {
            mean_burst_len.max(1.0)
        };
        let p_bg = 1.0 / burst;
        let p_gb = (p_bg * mean_loss / (1.0 - mean_loss)).min(1.0);
        Self::GilbertElliott {
            p_gb,
            p_bg,
            loss_good: 0.0,
            loss_bad: 1.0,
        }
    }

    /// Long-run fraction of datagrams this model loses (the stationary mean).
    pub fn mean_loss(&self) -> f64 {
        match *self {
            Self::None => 0.0,
            Self::Bernoulli(p) => p,
            Self::GilbertElliott {
                p_gb,
                p_bg,
                loss_good,
                loss_bad,
            } => {
                if p_gb + p_bg == 0.0 {
                    // The chain never leaves the starting (good) state.
                    return loss_good;
                }
                let bad = p_gb / (p_gb + p_bg);
                (1.0 - bad) * loss_good + bad * loss_bad
            }
        }
    }

    fn validate(&self) -> Result<(), NetsimError> {
        match *self {
            Self::None => Ok(()),
            Self::Bernoulli(p) => check_probability("loss", p),
            Self::GilbertElliott {
                p_gb,
                p_bg,
                loss_good,
                loss_bad,
            } => {
                check_probability("loss.p_gb", p_gb)?;
                check_probability("loss.p_bg", p_bg)?;
                check_probability("loss.loss_good", loss_good)?;
                check_probability("loss.loss_bad", loss_bad)
            }
        }
    }
}

fn check_probability(field: &'static str, value: f64) -> Result<(), NetsimError> {
    if (0.0..=1.0).contains(&value) {
        Ok(())
    } else {
        Err(NetsimError::InvalidProbability { field, value })
    }
}

/// How one direction of a path treats datagrams.
///
/// Stages, in the order a datagram meets them: [`loss`](Self::loss), the bottleneck queue
/// ([`rate`](Self::rate), [`queue_limit_bytes`](Self::queue_limit_bytes)), propagation
/// ([`delay`](Self::delay) + [`jitter`](Self::jitter), with [`reorder`](Self::reorder)),
/// [`duplicate`](Self::duplicate), [`corrupt`](Self::corrupt).
///
/// `Default` is an ideal link: no delay, no impairment, unlimited rate, unbounded queue. Build
/// from it with the `with_*` methods.
#[derive(Debug, Clone, PartialEq)]
pub struct LinkConfig {
    /// Minimum one-way propagation delay, added after the datagram leaves the bottleneck.
    pub delay: Duration,
    /// Extra random delay, uniform in `[0, jitter]`, on top of `delay`. Datagrams stay in FIFO
    /// order (a datagram is never delivered before one sent earlier) unless `reorder` fires.
    /// Because a datagram waits for those sent before it, a flow denser than the jitter sees
    /// one-way delays skewed toward `delay + jitter`.
    pub jitter: Duration,
    /// Random loss applied when the datagram is sent, before the bottleneck.
    pub loss: LossModel,
    /// Probability that a delivered datagram arrives twice (the copy is made after the
    /// bottleneck, so it does not consume capacity, and arrives right after the original).
    pub duplicate: f64,
    /// Probability that a datagram takes the fastest path: it skips jitter and the FIFO rule and
    /// is delivered at `departure + delay`, overtaking earlier datagrams that jitter is still
    /// holding back. Without jitter (or queue-delay variation) nothing can be overtaken.
    pub reorder: f64,
    /// Probability that a delivered copy has exactly one random bit flipped.
    pub corrupt: f64,
    /// Bottleneck capacity; `None` means unlimited (no serialisation delay, no queue).
    pub rate: Option<Rate>,
    /// Bottleneck buffer in bytes. A datagram is tail-dropped when the bytes not yet fully
    /// serialised (including the one on the wire) plus its own size would exceed this, so the
    /// time a datagram waits is at most `queue_limit_bytes · 8 / rate`.
    pub queue_limit_bytes: usize,
}

impl Default for LinkConfig {
    fn default() -> Self {
        Self {
            delay: Duration::ZERO,
            jitter: Duration::ZERO,
            loss: LossModel::None,
            duplicate: 0.0,
            reorder: 0.0,
            corrupt: 0.0,
            rate: None,
            queue_limit_bytes: usize::MAX,
        }
    }
}

impl LinkConfig {
    /// Sets [`delay`](Self::delay).
    #[must_use]
    pub const fn with_delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    /// Sets [`jitter`](Self::jitter).
    #[must_use]
    pub const fn with_jitter(mut self, jitter: Duration) -> Self {
        self.jitter = jitter;
        self
    }

    /// Sets [`loss`](Self::loss).
    #[must_use]
    pub const fn with_loss(mut self, loss: LossModel) -> Self {
        self.loss = loss;
        self
    }

    /// Sets [`duplicate`](Self::duplicate).
    #[must_use]
    pub const fn with_duplicate(mut self, p: f64) -> Self {
        self.duplicate = p;
        self
    }

    /// Sets [`reorder`](Self::reorder).
    #[must_use]
    pub const fn with_reorder(mut self, p: f64) -> Self {
        self.reorder = p;
        self
    }

    /// Sets [`corrupt`](Self::corrupt).
    #[must_use]
    pub const fn with_corrupt(mut self, p: f64) -> Self {
        self.corrupt = p;
        self
    }

    /// Sets [`rate`](Self::rate) to a finite capacity.
    #[must_use]
    pub const fn with_rate(mut self, rate: Rate) -> Self {
        self.rate = Some(rate);
        self
    }

    /// Sets [`queue_limit_bytes`](Self::queue_limit_bytes).
    #[must_use]
    pub const fn with_queue_limit_bytes(mut self, bytes: usize) -> Self {
        self.queue_limit_bytes = bytes;
        self
    }

    /// Checks that every probability is a number in `[0, 1]`.
    pub fn validate(&self) -> Result<(), NetsimError> {
        self.loss.validate()?;
        check_probability("duplicate", self.duplicate)?;
        check_probability("reorder", self.reorder)?;
        check_probability("corrupt", self.corrupt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bursty_parameters_match_formulas() {
        let LossModel::GilbertElliott {
            p_gb,
            p_bg,
            loss_good,
            loss_bad,
        } = LossModel::bursty(0.05, 4.0)
        else {
            panic!("expected Gilbert-Elliott");
        };
        assert!((p_bg - 0.25).abs() < 1e-12);
        assert!((p_gb - 0.25 * 0.05 / 0.95).abs() < 1e-12);
        assert!(loss_good.abs() < 1e-12 && (loss_bad - 1.0).abs() < 1e-12);
        assert!((LossModel::bursty(0.05, 4.0).mean_loss() - 0.05).abs() < 1e-12);
    }

    #[test]
    fn bursty_edge_cases() {
        assert_eq!(LossModel::bursty(0.0, 3.0), LossModel::None);
        assert_eq!(LossModel::bursty(f64::NAN, 3.0), LossModel::None);
        assert_eq!(LossModel::bursty(1.0, 3.0), LossModel::Bernoulli(1.0));
        // Burst length below one is raised to one; p_gb is capped at one.
        let LossModel::GilbertElliott { p_gb, p_bg, .. } = LossModel::bursty(0.9, 0.5) else {
            panic!("expected Gilbert-Elliott");
        };
        assert!((p_bg - 1.0).abs() < 1e-12 && (p_gb - 1.0).abs() < 1e-12);
    }

    #[test]
    fn validation_rejects_bad_probabilities() {
        assert!(LinkConfig::default().validate().is_ok());
        let bad = LinkConfig::default().with_duplicate(1.5);
        assert!(matches!(
            bad.validate(),
            Err(NetsimError::InvalidProbability {
                field: "duplicate",
                ..
            })
        ));
        assert!(
            LinkConfig::default()
                .with_loss(LossModel::Bernoulli(f64::NAN))
                .validate()
                .is_err()
        );
    }

    #[test]
    fn serialization_time_rounds_up() {
        assert_eq!(Rate::mbps(10).serialization_ns(1200), Some(960_000));
        assert_eq!(Rate::bps(3).serialization_ns(1), Some(2_666_666_667));
        assert_eq!(Rate::bps(0).serialization_ns(1), None);
    }
}
