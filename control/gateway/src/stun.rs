//! STUN responder (RFC 8489 Binding only) on a UDP socket, so peers can learn their
//! server-reflexive address for hole punching from the gateway they already use.
//!
//! Every datagram is handed to [`wavry_rift::wire::stun::answer_binding_request`]; anything that
//! is not a well-formed Binding request is ignored without an answer. Answers are rate limited
//! because a UDP source address can be forged: per source address (IPv6 by its rate-limit
//! block, see `WAVRY_IPV6_RATE_PREFIX`) and in total, so the responder can neither be made to
//! flood one victim nor to send more than the total budget. Requests past a limit are dropped
//! silently.

use std::{
    net::{IpAddr, SocketAddr},
    time::{Duration, Instant},
};

use tokio::net::UdpSocket;
use wavry_control_core::RateLimiter;
use wavry_rift::wire::stun::answer_binding_request;

use crate::app::St;

/// Answers per second per source address (`WAVRY_STUN_RATE_LIMIT`).
pub(crate) const PER_ADDRESS_PER_SEC: u32 = 20;
/// Answers per second in total (`WAVRY_STUN_TOTAL_RATE_LIMIT`).
pub(crate) const TOTAL_PER_SEC: u32 = 2000;
/// Source addresses tracked at once (`WAVRY_STUN_RATE_LIMIT_MAX_KEYS`); the oldest are evicted.
const MAX_ADDRESSES: usize = 100_000;
/// Largest datagram read; a longer one is truncated and then fails the length check.
const MAX_DATAGRAM: usize = 1500;
/// How often finished rate-limit windows are dropped.
const PURGE_EVERY: Duration = Duration::from_secs(30);
/// Pause after a failed receive, so a persistent socket error cannot spin a core.
const RECV_ERROR_PAUSE: Duration = Duration::from_millis(10);

/// Where the STUN responder listens (`--stun-listen`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StunListen {
    /// No STUN socket.
    Off,
    /// A UDP socket on this address.
    At(SocketAddr),
}

impl StunListen {
    /// The address, unless off.
    pub(crate) fn addr(self) -> Option<SocketAddr> {
        match self {
            Self::Off => None,
            Self::At(addr) => Some(addr),
        }
    }
}

/// Parses `--stun-listen`: `off` or an `ip:port`.
pub(crate) fn parse_listen(s: &str) -> Result<StunListen, String> {
    if s.trim().eq_ignore_ascii_case("off") {
        return Ok(StunListen::Off);
    }
    s.trim()
        .parse()
        .map(StunListen::At)
        .map_err(|e| format!("expected `off` or an ip:port ({e})"))
}

/// The two limits an answer must pass.
struct Limits {
    per_address: RateLimiter,
    total: RateLimiter,
}

impl Limits {
    fn from_env() -> Self {
        Self {
            per_address: RateLimiter::from_env(
                "WAVRY_STUN_RATE_LIMIT",
                PER_ADDRESS_PER_SEC,
                1,
                MAX_ADDRESSES,
            ),
            total: RateLimiter::from_env("WAVRY_STUN_TOTAL_RATE_LIMIT", TOTAL_PER_SEC, 1, 1),
        }
    }

    /// Counts one answer to `key`; `false` when either limit is reached. The per-address limit
    /// is checked first, so one noisy address cannot spend the total budget of everyone else.
    fn allow(&self, key: IpAddr) -> bool {
        self.per_address.check(&key.to_string()) && self.total.check("")
    }

    fn purge(&self) {
        self.per_address.purge();
        self.total.purge();
    }
}

/// Answers Binding requests on `socket` until the runtime stops.
pub(crate) async fn serve(socket: UdpSocket, st: St) {
    let limits = Limits::from_env();
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let mut last_purge = Instant::now();
    loop {
        let (n, from) = match socket.recv_from(&mut buf).await {
            Ok(got) => got,
            Err(e) => {
                tracing::debug!(error = %e, "STUN receive failed");
                tokio::time::sleep(RECV_ERROR_PAUSE).await;
                continue;
            }
        };
        if last_purge.elapsed() >= PURGE_EVERY {
            limits.purge();
            last_purge = Instant::now();
        }
        // A dual-stack socket sees IPv4 peers as ::ffff:a.b.c.d: tell them their IPv4 address.
        let reflexive = SocketAddr::new(from.ip().to_canonical(), from.port());
        let Ok(answer) = answer_binding_request(&buf[..n], reflexive) else {
            st.count(&st.metrics.stun_ignored);
            continue;
        };
        if !limits.allow(st.ip.rate_key(reflexive.ip())) {
            st.count(&st.metrics.stun_rate_limited);
            continue;
        }
        match socket.send_to(&answer, from).await {
            Ok(_) => st.count(&st.metrics.stun_answered),
            Err(e) => tracing::debug!(error = %e, %from, "STUN answer not sent"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_flag_parses() {
        assert_eq!(parse_listen("off"), Ok(StunListen::Off));
        assert_eq!(parse_listen("OFF"), Ok(StunListen::Off));
        assert_eq!(
            parse_listen("127.0.0.1:3478"),
            Ok(StunListen::At("127.0.0.1:3478".parse().unwrap()))
        );
        assert_eq!(
            parse_listen("[::1]:3478"),
            Ok(StunListen::At("[::1]:3478".parse().unwrap()))
        );
        assert!(parse_listen("127.0.0.1").is_err());
        assert!(parse_listen("").is_err());
    }

    #[test]
    fn per_address_limit_comes_before_the_total() {
        let limits = Limits {
            per_address: RateLimiter::new(2, Duration::from_secs(60), 16),
            total: RateLimiter::new(3, Duration::from_secs(60), 1),
        };
        let (a, b): (IpAddr, IpAddr) = ("192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap());
        assert!(limits.allow(a));
        assert!(limits.allow(a));
        // Refused per address without spending the total budget.
        assert!(!limits.allow(a));
        assert!(!limits.allow(a));
        assert!(limits.allow(b));
        // Total budget (3) spent.
        assert!(!limits.allow(b));
    }
}
