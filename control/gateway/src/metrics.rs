//! Gateway metrics, kept in a `prometheus-client` registry prefixed `wavry_gateway_` (the
//! conventions are in control/README.md, "Metrics"): monotonic counters (auth events, relay
//! sessions brokered, STUN datagrams) and a gauge of open WebSockets set at scrape time. Served
//! as OpenMetrics text at `/metrics` and `/metrics/prometheus`; the auth counters also as JSON
//! at `/metrics/auth`.

use axum::response::Response;
use prometheus_client::{
    metrics::{counter::Counter, gauge::Gauge},
    registry::Registry,
};

/// Every counter the gateway keeps.
pub(crate) struct AuthMetrics {
    pub(crate) register_attempts: Counter,
    pub(crate) register_success: Counter,
    pub(crate) login_attempts: Counter,
    pub(crate) login_success: Counter,
    pub(crate) totp_setup_attempts: Counter,
    pub(crate) totp_setup_success: Counter,
    pub(crate) totp_enable_attempts: Counter,
    pub(crate) totp_enable_success: Counter,
    pub(crate) logout_attempts: Counter,
    pub(crate) logout_success: Counter,
    pub(crate) rate_limited: Counter,
    pub(crate) validation_errors: Counter,
    pub(crate) auth_failures: Counter,
    pub(crate) db_errors: Counter,
    pub(crate) hasher_busy: Counter,
    /// Relay sessions brokered since start (only grows: a counter).
    pub(crate) relay_sessions: Counter,
    /// STUN Binding requests answered.
    pub(crate) stun_answered: Counter,
    /// STUN datagrams ignored (not a well-formed Binding request).
    pub(crate) stun_ignored: Counter,
    /// STUN Binding requests left unanswered by the per-address or total rate limit.
    pub(crate) stun_rate_limited: Counter,
    ws_connections: Gauge,
    registry: Registry,
}

impl AuthMetrics {
    /// Creates the counters and registers them.
    pub(crate) fn new() -> Self {
        let mut m = Self {
            register_attempts: Counter::default(),
            register_success: Counter::default(),
            login_attempts: Counter::default(),
            login_success: Counter::default(),
            totp_setup_attempts: Counter::default(),
            totp_setup_success: Counter::default(),
            totp_enable_attempts: Counter::default(),
            totp_enable_success: Counter::default(),
            logout_attempts: Counter::default(),
            logout_success: Counter::default(),
            rate_limited: Counter::default(),
            validation_errors: Counter::default(),
            auth_failures: Counter::default(),
            db_errors: Counter::default(),
            hasher_busy: Counter::default(),
            relay_sessions: Counter::default(),
            stun_answered: Counter::default(),
            stun_ignored: Counter::default(),
            stun_rate_limited: Counter::default(),
            ws_connections: Gauge::default(),
            registry: Registry::default(),
        };
        let mut registry = Registry::with_prefix("wavry_gateway");
        registry.register(
            "websocket_connections",
            "Open signalling WebSocket connections",
            m.ws_connections.clone(),
        );
        registry.register(
            "relay_sessions",
            "Relay sessions brokered since start",
            m.relay_sessions.clone(),
        );
        for (name, help, c) in [
            (
                "answered",
                "STUN Binding requests answered",
                &m.stun_answered,
            ),
            (
                "ignored",
                "STUN datagrams ignored (not a well-formed Binding request)",
                &m.stun_ignored,
            ),
            (
                "rate_limited",
                "STUN Binding requests not answered because of a rate limit",
                &m.stun_rate_limited,
            ),
        ] {
            registry.register(format!("stun_{name}"), help, c.clone());
        }
        for (name, c) in m.pairs() {
            registry.register(
                format!("auth_{name}"),
                format!("Auth events: {}", name.replace('_', " ")),
                c.clone(),
            );
        }
        m.registry = registry;
        m
    }

    /// Auth counters by name (without the `_total` suffix).
    pub(crate) fn pairs(&self) -> [(&'static str, &Counter); 15] {
        [
            ("register_attempts", &self.register_attempts),
            ("register_success", &self.register_success),
            ("login_attempts", &self.login_attempts),
            ("login_success", &self.login_success),
            ("totp_setup_attempts", &self.totp_setup_attempts),
            ("totp_setup_success", &self.totp_setup_success),
            ("totp_enable_attempts", &self.totp_enable_attempts),
            ("totp_enable_success", &self.totp_enable_success),
            ("logout_attempts", &self.logout_attempts),
            ("logout_success", &self.logout_success),
            ("rate_limited", &self.rate_limited),
            ("validation_errors", &self.validation_errors),
            ("auth_failures", &self.auth_failures),
            ("db_errors", &self.db_errors),
            ("hasher_busy", &self.hasher_busy),
        ]
    }

    /// The OpenMetrics response, with the current number of open WebSockets.
    pub(crate) fn respond(&self, ws_connections: usize) -> Response {
        self.ws_connections
            .set(i64::try_from(ws_connections).unwrap_or(i64::MAX));
        wavry_control_core::metrics::openmetrics_response(&self.registry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relay_sessions_is_a_counter() {
        let m = AuthMetrics::new();
        m.relay_sessions.inc();
        m.login_attempts.inc();
        m.stun_rate_limited.inc();
        m.ws_connections.set(3);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &m.registry).unwrap();
        assert!(
            text.contains("# TYPE wavry_gateway_relay_sessions counter"),
            "{text}"
        );
        assert!(
            text.contains("wavry_gateway_relay_sessions_total 1"),
            "{text}"
        );
        assert!(
            text.contains("wavry_gateway_auth_login_attempts_total 1"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE wavry_gateway_stun_answered counter"),
            "{text}"
        );
        assert!(
            text.contains("wavry_gateway_stun_rate_limited_total 1"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE wavry_gateway_websocket_connections gauge"),
            "{text}"
        );
        assert!(
            text.contains("wavry_gateway_websocket_connections 3"),
            "{text}"
        );
    }
}
