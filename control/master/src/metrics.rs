//! Master metrics, kept in a `prometheus-client` registry prefixed `wavry_master_` (the
//! conventions are in control/README.md, "Metrics"): counters of identity logins and
//! registrations, lease grants and refusals, relay registrations and heartbeats, and requests
//! refused by a rate limit; gauges of bound signalling peers, relays and uptime, set at scrape
//! time. Served as OpenMetrics text at `/metrics`.

use axum::response::Response;
use prometheus_client::{
    metrics::{counter::Counter, gauge::Gauge},
    registry::Registry,
};

/// Values the gauges take at scrape time.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Snapshot {
    pub(crate) signalling_peers: usize,
    pub(crate) relays_registered: usize,
    pub(crate) relays_assignable: usize,
    pub(crate) uptime_secs: u64,
}

/// Every counter and gauge the master keeps.
pub(crate) struct Metrics {
    /// Identities registered (challenge signed, account created).
    pub(crate) register_success: Counter,
    /// Signed login attempts (the second step of `/v1/auth/login`).
    pub(crate) login_attempts: Counter,
    /// Logins that produced a session.
    pub(crate) login_success: Counter,
    /// Lease pairs issued (over HTTP or `/ws`).
    lease_grants: Counter,
    /// Lease requests from an authenticated caller that were refused.
    lease_refusals: Counter,
    /// Relay registrations accepted.
    pub(crate) relay_registrations: Counter,
    /// Relay heartbeats accepted.
    pub(crate) relay_heartbeats: Counter,
    /// Requests refused by a rate limit (HTTP 429 and `/ws` BIND).
    pub(crate) rate_limited: Counter,
    signalling_peers: Gauge,
    relays_registered: Gauge,
    relays_assignable: Gauge,
    uptime_seconds: Gauge,
    registry: Registry,
}

fn gauge(v: impl TryInto<i64>) -> i64 {
    v.try_into().unwrap_or(i64::MAX)
}

impl Metrics {
    /// Creates the metrics and registers them.
    pub(crate) fn new() -> Self {
        let mut m = Self {
            register_success: Counter::default(),
            login_attempts: Counter::default(),
            login_success: Counter::default(),
            lease_grants: Counter::default(),
            lease_refusals: Counter::default(),
            relay_registrations: Counter::default(),
            relay_heartbeats: Counter::default(),
            rate_limited: Counter::default(),
            signalling_peers: Gauge::default(),
            relays_registered: Gauge::default(),
            relays_assignable: Gauge::default(),
            uptime_seconds: Gauge::default(),
            registry: Registry::default(),
        };
        let mut r = Registry::with_prefix("wavry_master");
        for (name, help, c) in [
            (
                "auth_register_success",
                "Identities registered",
                &m.register_success,
            ),
            (
                "auth_login_attempts",
                "Signed identity login attempts",
                &m.login_attempts,
            ),
            (
                "auth_login_success",
                "Identity logins that produced a session",
                &m.login_success,
            ),
            (
                "lease_grants",
                "Lease pairs issued (HTTP and /ws)",
                &m.lease_grants,
            ),
            (
                "lease_refusals",
                "Lease requests from an authenticated caller that were refused",
                &m.lease_refusals,
            ),
            (
                "relay_registrations",
                "Relay registrations accepted",
                &m.relay_registrations,
            ),
            (
                "relay_heartbeats",
                "Relay heartbeats accepted",
                &m.relay_heartbeats,
            ),
            (
                "rate_limited",
                "Requests refused by a rate limit (HTTP 429 and /ws BIND)",
                &m.rate_limited,
            ),
        ] {
            r.register(name, help, c.clone());
        }
        for (name, help, g) in [
            (
                "signalling_peers",
                "Identities bound to the signalling WebSocket",
                &m.signalling_peers,
            ),
            (
                "relays_registered",
                "Relays in the registry",
                &m.relays_registered,
            ),
            (
                "relays_assignable",
                "Relays that leases can name now (assignable state, heard from recently)",
                &m.relays_assignable,
            ),
            ("uptime_seconds", "Seconds since start", &m.uptime_seconds),
        ] {
            r.register(name, help, g.clone());
        }
        m.registry = r;
        m
    }

    /// Counts the outcome of a lease request.
    pub(crate) fn lease(&self, granted: bool) {
        if granted {
            self.lease_grants.inc();
        } else {
            self.lease_refusals.inc();
        }
    }

    /// The OpenMetrics response, with the gauges set from `now`.
    pub(crate) fn respond(&self, now: Snapshot) -> Response {
        self.signalling_peers.set(gauge(now.signalling_peers));
        self.relays_registered.set(gauge(now.relays_registered));
        self.relays_assignable.set(gauge(now.relays_assignable));
        self.uptime_seconds.set(gauge(now.uptime_secs));
        wavry_control_core::metrics::openmetrics_response(&self.registry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_conventions() {
        let m = Metrics::new();
        m.login_attempts.inc();
        m.lease(true);
        m.lease(false);
        m.lease(false);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &m.registry).unwrap();
        for want in [
            "# TYPE wavry_master_auth_login_attempts counter",
            "wavry_master_auth_login_attempts_total 1",
            "wavry_master_lease_grants_total 1",
            "wavry_master_lease_refusals_total 2",
            "# TYPE wavry_master_relays_assignable gauge",
        ] {
            assert!(text.contains(want), "{want} missing in\n{text}");
        }
    }
}
