//! DELTA: the delay-trend congestion controller (spec DELTA.md), with the original's faults
//! fixed:
//! - driven by transport feedback several times per RTT, not by a 1 Hz stats report;
//! - multiplicative decrease at most once per smoothed RTT, aimed below the measured delivery
//!   rate so the bottleneck queue drains quickly (deeper queue → deeper cut, never below ½);
//! - the increase is proportional to time, not to how often samples arrive;
//! - k-persistence of 3 samples for STABLE ↔ RISING, leaving CONGESTED needs the queue below
//!   half of `T_limit`; FPS steps down after 1 s CONGESTED and recovers after 5 s STABLE;
//! - the target bitrate and fps are outputs the session emits to the encoder;
//! - loss counts too (the spec's DELTA is delay-only): a shallow buffer or a policer drops the
//!   excess before any queue builds, so a smoothed loss above 10 % over windows of at least
//!   one RTT and 100 datagrams cuts the rate under what was delivered, and above 2 % the rate
//!   does not grow. Random loss below that is left to FEC and NACK.

use std::time::{Duration, Instant};

/// Controller state (spec §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeltaState {
    /// Queue empty or shrinking: probe upwards.
    Stable,
    /// Queue growing: hold.
    Rising,
    /// Queue above `T_limit`: cut.
    Congested,
}

/// Tunables. Defaults follow the spec's code values where they are sound.
#[derive(Debug, Clone)]
pub struct DeltaConfig {
    /// Lowest target bitrate, bit/s.
    pub min_bps: u64,
    /// Highest target bitrate, bit/s.
    pub max_bps: u64,
    /// Starting target, bit/s.
    pub initial_bps: u64,
    /// Queueing delay above which the path is congested.
    pub t_limit: Duration,
    /// RTT smoothing factor.
    pub alpha: f64,
    /// Samples of persistence for STABLE ↔ RISING.
    pub k: u32,
    /// Multiplicative increase per second while STABLE with an empty queue (0.15 = +15 %/s).
    pub increase_per_sec: f64,
    /// Additive increase per second while STABLE, bit/s.
    pub additive_bps_per_sec: u64,
    /// Queue delay a cut aims to drain within this time.
    pub drain_time: Duration,
    /// Shallowest cut relative to the delivery rate (spec β is 0.85 of the send rate).
    pub beta: f64,
    /// Window of the minimum-RTT filter.
    pub rtt_min_window: Duration,
    /// Starting frame rate.
    pub fps: u32,
}

impl Default for DeltaConfig {
    fn default() -> Self {
        Self {
            min_bps: 2_000_000,
            max_bps: 50_000_000,
            initial_bps: 20_000_000,
            t_limit: Duration::from_millis(15),
            alpha: 0.125,
            k: 3,
            increase_per_sec: 0.15,
            additive_bps_per_sec: 500_000,
            drain_time: Duration::from_millis(250),
            beta: 0.9,
            rtt_min_window: Duration::from_secs(10),
            fps: 60,
        }
    }
}

/// One feedback sample.
#[derive(Debug, Clone, Copy)]
pub struct CcSample {
    /// When the feedback arrived.
    pub now: Instant,
    /// Round-trip time measured from it.
    pub rtt: Duration,
    /// Rate at which the receiver got data recently, bit/s (None if unknown).
    pub delivery_bps: Option<u64>,
    /// Datagrams the receiver reported received / lost since its previous report.
    pub received: u32,
    /// See `received`.
    pub lost: u32,
}

/// Loss above which a window counts as congestion even without a queue (a policer drops
/// what exceeds its rate and never delays it): the rate is cut towards what was delivered.
const LOSS_CUT: f64 = 0.10;
/// Loss above which the rate may not grow (random loss below it is FEC's and NACK's job).
const LOSS_HOLD: f64 = 0.02;
/// Fewest datagrams a loss window needs before it is judged: with 100, a 5 % random loss
/// reads above 10 % in about one window in a hundred, and the estimate averages two windows.
const LOSS_MIN_PACKETS: u64 = 100;

const BUCKETS: usize = 10;

/// The controller.
#[derive(Debug, Clone)]
pub struct Delta {
    cfg: DeltaConfig,
    state: DeltaState,
    rate: f64,
    fps: u32,
    rtt_smooth: Option<f64>,
    // Windowed minimum: per-bucket minima over `rtt_min_window`.
    min_buckets: [(Option<Instant>, f64); BUCKETS],
    dq_prev: f64,
    rising: u32,
    stable: u32,
    last_sample: Option<Instant>,
    last_cut: Option<Instant>,
    congested_since: Option<Instant>,
    stable_since: Option<Instant>,
    /// Capacity estimate: the highest delivery rate seen recently, reset on every cut.
    capacity: Option<(Instant, f64)>,
    /// The loss window being counted: its start, received, lost.
    loss_window: (Option<Instant>, u64, u64),
    /// Loss fraction of the last judged window.
    loss: f64,
}

fn step_down(fps: u32) -> u32 {
    match fps {
        144 | 120 | 90 => 90.min(fps.saturating_sub(30)).max(60),
        60 => 45,
        45 => 30,
        f if f > 60 => 60,
        f => f,
    }
}

impl Delta {
    /// A controller at `cfg.initial_bps`.
    pub fn new(cfg: DeltaConfig) -> Self {
        let rate = cfg.initial_bps.clamp(cfg.min_bps, cfg.max_bps) as f64;
        let fps = cfg.fps;
        Self {
            cfg,
            state: DeltaState::Stable,
            rate,
            fps,
            rtt_smooth: None,
            min_buckets: [(None, f64::MAX); BUCKETS],
            dq_prev: 0.0,
            rising: 0,
            stable: 0,
            last_sample: None,
            last_cut: None,
            congested_since: None,
            stable_since: None,
            capacity: None,
            loss_window: (None, 0, 0),
            loss: 0.0,
        }
    }

    /// Current target bitrate, bit/s.
    pub fn target_bps(&self) -> u64 {
        self.rate as u64
    }

    /// Current target frame rate.
    pub fn target_fps(&self) -> u32 {
        self.fps
    }

    /// Current state.
    pub fn state(&self) -> DeltaState {
        self.state
    }

    /// Smoothed RTT, if any sample arrived.
    pub fn rtt_smooth(&self) -> Option<Duration> {
        self.rtt_smooth.map(Duration::from_secs_f64)
    }

    /// Estimated queueing delay (smoothed RTT above the windowed minimum).
    pub fn queue_delay(&self) -> Duration {
        Duration::from_secs_f64(self.dq_prev)
    }

    /// Sets the ceiling (e.g. the application's maximum bitrate).
    pub fn set_max_bps(&mut self, max: u64) {
        self.cfg.max_bps = max.max(self.cfg.min_bps);
        self.rate = self.rate.min(self.cfg.max_bps as f64);
    }

    fn rtt_min(&mut self, now: Instant, rtt: f64) -> f64 {
        let width = self.cfg.rtt_min_window / BUCKETS as u32;
        let slot = match self.min_buckets[0].0 {
            Some(start) if now.duration_since(start) < width => 0,
            _ => {
                self.min_buckets.rotate_right(1);
                self.min_buckets[0] = (Some(now), f64::MAX);
                0
            }
        };
        self.min_buckets[slot].1 = self.min_buckets[slot].1.min(rtt);
        let horizon = self.cfg.rtt_min_window;
        self.min_buckets
            .iter()
            .filter(|(t, _)| t.is_some_and(|t| now.duration_since(t) <= horizon))
            .map(|&(_, m)| m)
            .fold(f64::MAX, f64::min)
    }

    /// Feeds one sample; returns true when the target bitrate or fps changed.
    pub fn on_sample(&mut self, s: CcSample) -> bool {
        let (old_rate, old_fps) = (self.rate as u64, self.fps);
        let rtt = s.rtt.as_secs_f64();
        let dt = self
            .last_sample
            .map_or(0.0, |t| s.now.duration_since(t).as_secs_f64().min(0.2));
        self.last_sample = Some(s.now);
        let min = self.rtt_min(s.now, rtt);
        let smooth = match self.rtt_smooth {
            None => rtt,
            Some(prev) => (1.0 - self.cfg.alpha) * prev + self.cfg.alpha * rtt,
        };
        self.rtt_smooth = Some(smooth);
        // Queueing delay from the raw sample, lightly smoothed: the RTT EWMA (α = 1/8 per
        // sample) lags a fast-filling bottleneck by several RTTs and caused repeated cuts.
        let dq = 0.5 * self.dq_prev + 0.5 * (rtt - min).max(0.0);
        let slope = dq - self.dq_prev;
        self.dq_prev = dq;
        let t_limit = self.cfg.t_limit.as_secs_f64();
        let epsilon = 0.05 * smooth;

        if dq > t_limit {
            if self.state != DeltaState::Congested {
                self.state = DeltaState::Congested;
                self.congested_since = Some(s.now);
                self.stable_since = None;
            }
            self.rising = 0;
            self.stable = 0;
        } else if slope > epsilon {
            self.rising += 1;
            self.stable = 0;
            if self.rising >= self.cfg.k && self.state == DeltaState::Stable {
                self.state = DeltaState::Rising;
                self.stable_since = None;
            }
        } else if slope <= 0.0 {
            self.stable += 1;
            self.rising = 0;
            if self.stable >= self.cfg.k && self.state != DeltaState::Stable && dq < t_limit / 2.0 {
                self.state = DeltaState::Stable;
                self.congested_since = None;
                self.stable_since = Some(s.now);
            }
        }

        if let Some(d) = s.delivery_bps {
            let d = d as f64;
            let stale = self
                .capacity
                .is_none_or(|(t, c)| d >= c || s.now.duration_since(t) > Duration::from_secs(2));
            if stale {
                self.capacity = Some((s.now, d));
            }
        }
        // Loss, judged over windows of at least one smoothed RTT (and 50 ms).
        let (start, recv, lost) = &mut self.loss_window;
        let start = *start.get_or_insert(s.now);
        *recv += u64::from(s.received);
        *lost += u64::from(s.lost);
        let window = smooth.max(0.05);
        let mut loss_cut = false;
        if s.now.duration_since(start).as_secs_f64() >= window && *recv + *lost >= LOSS_MIN_PACKETS
        {
            // Half this window, half the estimate before it.
            let w = *lost as f64 / (*recv + *lost) as f64;
            self.loss = 0.5 * self.loss + 0.5 * w;
            self.loss_window = (Some(s.now), 0, 0);
            loss_cut = self.loss > LOSS_CUT;
        }
        if loss_cut {
            // Congestion no queue shows: aim just under what got through, once per window.
            let base = s
                .delivery_bps
                .map_or(self.rate * (1.0 - self.loss), |d| (d as f64).min(self.rate));
            self.rate = base * self.cfg.beta;
            self.last_cut = Some(s.now);
            self.capacity = s.delivery_bps.map(|d| (s.now, d as f64));
        }
        match self.state {
            DeltaState::Stable if self.loss > LOSS_HOLD => {}
            DeltaState::Stable => {
                let headroom = (1.0 - dq / t_limit).max(0.0);
                match self.capacity {
                    // Well below what the path delivered recently: return there quickly.
                    Some((_, c)) if self.rate < 0.85 * c => {
                        self.rate += (0.9 * c - self.rate) * (4.0 * dt).min(1.0) * headroom;
                    }
                    // Near or above it: probe gently for more.
                    _ => {
                        self.rate += (self.rate * self.cfg.increase_per_sec
                            + self.cfg.additive_bps_per_sec as f64)
                            * dt
                            * headroom;
                    }
                }
                if self
                    .stable_since
                    .is_some_and(|t| s.now.duration_since(t) >= Duration::from_secs(5))
                    && self.fps < self.cfg.fps
                {
                    self.fps = (self.fps + 15).min(self.cfg.fps);
                    self.stable_since = Some(s.now);
                }
            }
            DeltaState::Rising => {}
            DeltaState::Congested => {
                let once_per_rtt = self
                    .last_cut
                    .is_none_or(|t| s.now.duration_since(t).as_secs_f64() >= smooth);
                // A queue that is already draining needs no further cut.
                if once_per_rtt && slope >= 0.0 {
                    let base = s
                        .delivery_bps
                        .map_or(self.rate, |d| (d as f64).min(self.rate));
                    let factor =
                        (1.0 - dq / self.cfg.drain_time.as_secs_f64()).clamp(0.5, self.cfg.beta);
                    self.rate = base * factor;
                    self.last_cut = Some(s.now);
                    if let Some(d) = s.delivery_bps {
                        self.capacity = Some((s.now, d as f64));
                    }
                }
                if self
                    .congested_since
                    .is_some_and(|t| s.now.duration_since(t) >= Duration::from_secs(1))
                {
                    self.fps = step_down(self.fps);
                    self.congested_since = Some(s.now);
                }
            }
        }
        self.rate = self
            .rate
            .clamp(self.cfg.min_bps as f64, self.cfg.max_bps as f64);
        self.rate as u64 != old_rate || self.fps != old_fps
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(now: Instant, rtt_ms: f64, delivery: Option<u64>) -> CcSample {
        CcSample {
            now,
            received: 10,
            lost: 0,
            rtt: Duration::from_secs_f64(rtt_ms / 1000.0),
            delivery_bps: delivery,
        }
    }

    #[test]
    fn grows_on_an_empty_queue_and_cuts_below_delivery_when_congested() {
        let t0 = Instant::now();
        let mut d = Delta::new(DeltaConfig {
            initial_bps: 10_000_000,
            ..DeltaConfig::default()
        });
        for i in 0..100 {
            d.on_sample(sample(t0 + Duration::from_millis(10 * i), 40.0, None));
        }
        assert_eq!(d.state(), DeltaState::Stable);
        assert!(d.target_bps() > 11_000_000, "{}", d.target_bps());
        // Queue builds to 100 ms: congested, rate cut below the 10 Mbit/s delivery rate.
        let mut t = t0 + Duration::from_secs(1);
        for _ in 0..40 {
            t += Duration::from_millis(10);
            d.on_sample(sample(t, 140.0, Some(10_000_000)));
        }
        assert_eq!(d.state(), DeltaState::Congested);
        assert!(d.target_bps() < 10_000_000);
        assert!(d.target_bps() >= 2_000_000);
    }

    #[test]
    fn cuts_at_most_once_per_rtt() {
        let t0 = Instant::now();
        let mut d = Delta::new(DeltaConfig::default());
        d.on_sample(sample(t0, 40.0, None));
        let mut t = t0;
        let mut cuts = 0;
        let mut last = d.target_bps();
        for _ in 0..20 {
            t += Duration::from_millis(5);
            d.on_sample(sample(t, 200.0, Some(30_000_000)));
            if d.target_bps() < last {
                cuts += 1;
            }
            last = d.target_bps();
        }
        // 100 ms of samples with a smoothed RTT well above 40 ms: at most 2-3 cuts, not 20.
        assert!((1..=3).contains(&cuts), "{cuts}");
    }

    #[test]
    fn fps_steps_down_when_congested_and_recovers_when_stable() {
        let t0 = Instant::now();
        let mut d = Delta::new(DeltaConfig::default());
        d.on_sample(sample(t0, 20.0, None));
        let mut t = t0;
        for _ in 0..150 {
            t += Duration::from_millis(10);
            d.on_sample(sample(t, 300.0, None));
        }
        assert!(d.target_fps() < 60);
        for _ in 0..1500 {
            t += Duration::from_millis(10);
            d.on_sample(sample(t, 20.0, None));
        }
        assert_eq!(d.target_fps(), 60);
        assert_eq!(d.state(), DeltaState::Stable);
    }

    #[test]
    fn fps_table() {
        assert_eq!(step_down(144), 90);
        assert_eq!(step_down(120), 90);
        assert_eq!(step_down(90), 60);
        assert_eq!(step_down(60), 45);
        assert_eq!(step_down(45), 30);
        assert_eq!(step_down(30), 30);
        assert_eq!(step_down(75), 60);
    }
}
