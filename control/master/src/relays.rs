//! Relay registry, state machine and ranked selection.
//!
//! Differences from the original master (RELAY.md §7), on purpose:
//! - a relay without feedback gets a Bayesian prior (success 0.8, quality 70), not 0;
//! - every scored input is fed: client RTT/loss probes (from `REQUEST_RELAY`), load from
//!   heartbeats, region/ASN from registration vs. the request, reputation from verified
//!   feedback, freshness from the last heartbeat; inputs nothing measures are not scored;
//! - stale relays (no heartbeat for 120 s) are never candidates, not only after a sweep;
//! - the result is a deterministic ranked list (failover order), at most 2 per ASN.

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};
use wavry_signal::{RankedRelay, RelayProbe};

/// Heartbeat interval handed to relays.
pub(crate) const HEARTBEAT_INTERVAL_MS: u64 = 5000;
/// After this long without a heartbeat a relay is not assignable (and is quarantined).
pub(crate) const STALE_AFTER: Duration = Duration::from_secs(120);
/// After this long without a heartbeat a relay is removed.
pub(crate) const REMOVE_AFTER: Duration = Duration::from_secs(600);
/// Heartbeats needed to move from Probation to Active.
const HEARTBEATS_TO_ACTIVE: u32 = 3;
/// Longest ranked list returned.
pub(crate) const MAX_RANKED: usize = 10;

/// Relay lifecycle states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum RelayState {
    /// Registered, no heartbeat yet.
    New,
    /// Heartbeating, not yet trusted (or recovering / poor reputation).
    Probation,
    /// Healthy.
    Active,
    /// Overloaded (load ≥ 95 %).
    Degraded,
    /// Operator asked it to take no new sessions (sticky).
    Draining,
    /// Missed heartbeats for 120 s.
    Quarantined,
    /// Operator ban (sticky).
    Banned,
}

impl RelayState {
    /// Whether new sessions may be placed on a relay in this state.
    pub(crate) const fn assignable(self) -> bool {
        matches!(
            self,
            Self::New | Self::Probation | Self::Active | Self::Degraded
        )
    }

    const fn multiplier(self) -> f64 {
        match self {
            Self::New => 0.7,
            Self::Probation => 0.85,
            Self::Active => 1.0,
            Self::Degraded => 0.5,
            Self::Draining | Self::Quarantined | Self::Banned => 0.0,
        }
    }
}

/// A registered relay.
#[derive(Debug, Clone)]
pub(crate) struct Relay {
    /// Relay id.
    pub(crate) id: String,
    /// Advertised endpoints (`ip:port`).
    pub(crate) endpoints: Vec<String>,
    /// IP of the first endpoint.
    pub(crate) ip: IpAddr,
    /// Region label.
    pub(crate) region: Option<String>,
    /// Autonomous system number.
    pub(crate) asn: Option<u32>,
    /// Advertised session capacity.
    pub(crate) max_sessions: Option<u32>,
    /// Advertised bitrate cap.
    pub(crate) max_bitrate_kbps: u32,
    /// Last reported load.
    pub(crate) load_pct: f64,
    /// Lifecycle state.
    pub(crate) state: RelayState,
    /// Last register/heartbeat.
    pub(crate) last_seen: Instant,
    /// Consecutive heartbeats.
    pub(crate) heartbeats: u32,
    /// Relay identity (Wavry ID) proven at registration, if any.
    pub(crate) identity: Option<String>,
    /// Hash of the per-relay heartbeat token.
    pub(crate) heartbeat_token_hash: String,
    /// Unix ms of the last change (newest wins when merging the shared registry).
    pub(crate) updated_ms: i64,
}

/// Verified feedback aggregate of one relay.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct Reputation {
    /// Sessions reported good.
    pub(crate) success: i64,
    /// Sessions reported bad.
    pub(crate) failure: i64,
    /// Sum of quality scores (0..100).
    pub(crate) quality_sum: f64,
    /// Number of quality samples.
    pub(crate) samples: i64,
}

impl Reputation {
    /// Smoothed success rate with a prior of 4 good / 1 bad session (0.8 with no data).
    pub(crate) fn success_rate(&self) -> f64 {
        (self.success as f64 + 4.0) / ((self.success + self.failure) as f64 + 5.0)
    }

    /// Smoothed quality with a prior of 70 weighted as 3 samples.
    pub(crate) fn quality(&self) -> f64 {
        (self.quality_sum + 70.0 * 3.0) / (self.samples as f64 + 3.0)
    }
}

/// Validates an advertised endpoint: a socket address with a routable-looking IP (not
/// unspecified, not multicast) and a non-zero port.
pub(crate) fn parse_endpoint(s: &str) -> Option<SocketAddr> {
    let a: SocketAddr = s.trim().parse().ok()?;
    if a.port() == 0 || a.ip().is_unspecified() || a.ip().is_multicast() {
        return None;
    }
    Some(a)
}

/// Moves a relay's state on a heartbeat with `load_pct`.
pub(crate) fn on_heartbeat(r: &mut Relay, load_pct: f64, rep: Option<&Reputation>) {
    r.last_seen = Instant::now();
    r.load_pct = load_pct;
    r.heartbeats = r.heartbeats.saturating_add(1);
    if matches!(r.state, RelayState::Draining | RelayState::Banned) {
        return;
    }
    let poor = rep.is_some_and(|p| p.success + p.failure >= 10 && p.success_rate() < 0.5);
    r.state = if load_pct >= 95.0 {
        RelayState::Degraded
    } else if r.state == RelayState::Quarantined || poor || r.heartbeats < HEARTBEATS_TO_ACTIVE {
        RelayState::Probation
    } else {
        RelayState::Active
    };
}

fn freshness(age: Duration) -> f64 {
    match age.as_secs() {
        0..=30 => 1.0,
        31..=90 => 0.9,
        _ => 0.65,
    }
}

fn region_distance(want: &str, have: Option<&str>) -> f64 {
    match have {
        None => 2.0,
        Some(h) if h.eq_ignore_ascii_case(want) => 0.0,
        Some(h)
            if h.split('-')
                .next()
                .zip(want.split('-').next())
                .is_some_and(|(a, b)| a.eq_ignore_ascii_case(b)) =>
        {
            1.0
        }
        Some(_) => 5.0,
    }
}

/// Scores one relay (0..100). Components and weights:
/// reputation success 0.30, quality 0.10, latency 0.25 (probe RTT, else region estimate,
/// else neutral), loss 0.10 (probe, else neutral), spare capacity 0.25; then × freshness ×
/// state multiplier.
pub(crate) fn score(
    r: &Relay,
    rep: &Reputation,
    probe: Option<&RelayProbe>,
    region: Option<&str>,
    now: Instant,
) -> f64 {
    let latency = match (probe, region) {
        (Some(p), _) => {
            (100.0 - (p.rtt_ms.max(0.0) - 20.0).max(0.0) * (100.0 / 280.0)).clamp(0.0, 100.0)
        }
        (None, Some(want)) => 100.0 - region_distance(want, r.region.as_deref()) * 14.0,
        (None, None) => 70.0,
    };
    let loss = probe.map_or(85.0, |p| {
        (100.0 - p.loss_pct.clamp(0.0, 100.0) * 10.0).max(0.0)
    });
    let capacity = (100.0 - r.load_pct).clamp(0.0, 100.0);
    let base = 0.30 * rep.success_rate() * 100.0
        + 0.10 * rep.quality()
        + 0.25 * latency
        + 0.10 * loss
        + 0.25 * capacity;
    base * freshness(now.duration_since(r.last_seen)) * r.state.multiplier()
}

/// Ranks assignable, fresh relays for a request: best first, at most two per known ASN,
/// at most [`MAX_RANKED`].
pub(crate) fn rank(
    relays: &HashMap<String, Relay>,
    reps: &HashMap<String, Reputation>,
    probes: &[RelayProbe],
    region: Option<&str>,
    exclude: &[String],
) -> Vec<RankedRelay> {
    let now = Instant::now();
    let none = Reputation::default();
    let mut scored: Vec<(f64, &Relay)> = relays
        .values()
        .filter(|r| {
            r.state.assignable()
                && now.duration_since(r.last_seen) <= STALE_AFTER
                && !exclude.contains(&r.id)
        })
        .map(|r| {
            let probe = probes.iter().find(|p| p.relay_id == r.id);
            (
                score(r, reps.get(&r.id).unwrap_or(&none), probe, region, now),
                r,
            )
        })
        .filter(|(s, _)| *s > 0.0)
        .collect();
    scored.sort_by(|a, b| {
        b.0.total_cmp(&a.0)
            .then_with(|| a.1.load_pct.total_cmp(&b.1.load_pct))
            .then_with(|| a.1.id.cmp(&b.1.id))
    });
    let mut per_asn: HashMap<u32, usize> = HashMap::new();
    let mut out = Vec::new();
    for (s, r) in scored {
        if let Some(asn) = r.asn {
            let n = per_asn.entry(asn).or_default();
            if *n >= 2 {
                continue;
            }
            *n += 1;
        }
        out.push(RankedRelay {
            relay_id: r.id.clone(),
            addr: r.endpoints[0].clone(),
            region: r.region.clone(),
            score: (s * 100.0).round() / 100.0,
        });
        if out.len() >= MAX_RANKED {
            break;
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn relay(
        id: &str,
        load: f64,
        state: RelayState,
        asn: Option<u32>,
        region: Option<&str>,
    ) -> Relay {
        Relay {
            id: id.into(),
            endpoints: vec!["192.0.2.1:4000".into()],
            ip: std::net::IpAddr::from([192, 0, 2, 1]),
            region: region.map(Into::into),
            asn,
            max_sessions: None,
            max_bitrate_kbps: 20000,
            load_pct: load,
            state,
            last_seen: Instant::now(),
            heartbeats: 5,
            identity: None,
            heartbeat_token_hash: String::new(),
            updated_ms: 0,
        }
    }

    #[test]
    fn relay_without_feedback_is_not_scored_zero() {
        let r = relay("a", 10.0, RelayState::New, None, None);
        assert!(score(&r, &Reputation::default(), None, None, Instant::now()) > 40.0);
    }

    #[test]
    fn ranking_uses_load_probes_reputation_region_and_asn() {
        let mut m = HashMap::new();
        for r in [
            relay("busy", 90.0, RelayState::Active, Some(1), Some("eu-west")),
            relay("idle", 5.0, RelayState::Active, Some(1), Some("eu-west")),
            relay("far", 5.0, RelayState::Active, Some(2), Some("us-east")),
            relay(
                "same-asn",
                50.0,
                RelayState::Active,
                Some(1),
                Some("eu-west"),
            ),
            relay("drain", 0.0, RelayState::Draining, None, None),
        ] {
            m.insert(r.id.clone(), r);
        }
        let reps = HashMap::new();
        let ids = |v: Vec<RankedRelay>| v.into_iter().map(|r| r.relay_id).collect::<Vec<_>>();
        let ranked = ids(rank(&m, &reps, &[], Some("eu-west"), &[]));
        assert_eq!(ranked[0], "idle");
        assert!(!ranked.contains(&"drain".to_string()));
        assert_eq!(
            ranked
                .iter()
                .filter(|id| ["busy", "idle", "same-asn"].contains(&id.as_str()))
                .count(),
            2,
            "two per ASN"
        );
        let probes = [
            RelayProbe {
                relay_id: "far".into(),
                rtt_ms: 5.0,
                loss_pct: 0.0,
            },
            RelayProbe {
                relay_id: "idle".into(),
                rtt_ms: 250.0,
                loss_pct: 5.0,
            },
        ];
        assert_eq!(
            ids(rank(&m, &reps, &probes, Some("eu-west"), &[]))[0],
            "far"
        );
        let mut bad = HashMap::new();
        bad.insert(
            "idle".to_string(),
            Reputation {
                success: 1,
                failure: 30,
                quality_sum: 100.0,
                samples: 31,
            },
        );
        assert_ne!(ids(rank(&m, &bad, &[], Some("eu-west"), &[]))[0], "idle");
        assert!(!ids(rank(&m, &reps, &[], None, &["idle".into()])).contains(&"idle".to_string()));
    }

    #[test]
    fn heartbeat_state_machine() {
        let mut r = relay("a", 0.0, RelayState::New, None, None);
        r.heartbeats = 0;
        on_heartbeat(&mut r, 10.0, None);
        assert_eq!(r.state, RelayState::Probation);
        on_heartbeat(&mut r, 10.0, None);
        on_heartbeat(&mut r, 10.0, None);
        assert_eq!(r.state, RelayState::Active);
        on_heartbeat(&mut r, 97.0, None);
        assert_eq!(r.state, RelayState::Degraded);
        r.state = RelayState::Draining;
        on_heartbeat(&mut r, 1.0, None);
        assert_eq!(r.state, RelayState::Draining);
        assert!(parse_endpoint("0.0.0.0:4000").is_none() && parse_endpoint("10.0.0.1:0").is_none());
        assert!(parse_endpoint("10.0.0.1:4000").is_some());
    }
}
