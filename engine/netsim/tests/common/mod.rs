//! Shared driving helpers for the scenario tests: constant-bit-rate flows whose datagrams carry
//! their sequence number and send time, and an event-driven loop in the style of quinn's `Pair`.
// Each test binary uses a different subset of these helpers.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use wavry_netsim::{Delivery, Netsim, SendOutcome};

/// Endpoint A's address.
pub(crate) fn a() -> SocketAddr {
    "10.0.0.1:5000".parse().unwrap()
}

/// Endpoint B's address.
pub(crate) fn b() -> SocketAddr {
    "10.0.0.2:6000".parse().unwrap()
}

/// `n` seconds after `t0`.
pub(crate) fn secs(t0: Instant, n: f64) -> Instant {
    t0 + Duration::from_secs_f64(n)
}

/// A constant-bit-rate sender: `size`-byte datagrams every `gap`, each carrying its sequence
/// number (bytes 0..8) and send time in nanoseconds since `origin` (bytes 8..16).
#[derive(Debug)]
pub(crate) struct Flow {
    pub(crate) from: SocketAddr,
    pub(crate) to: SocketAddr,
    pub(crate) size: usize,
    pub(crate) gap: Duration,
    pub(crate) next: Instant,
    pub(crate) seq: u64,
    pub(crate) origin: Instant,
    pub(crate) outcomes: Vec<SendOutcome>,
    buf: Vec<u8>,
}

impl Flow {
    /// A flow offering `bps` bits per second of `size`-byte datagrams from `start`.
    pub(crate) fn cbr(
        from: SocketAddr,
        to: SocketAddr,
        size: usize,
        bps: u64,
        start: Instant,
    ) -> Self {
        assert!(size >= 16);
        Self {
            from,
            to,
            size,
            gap: Duration::from_nanos(size as u64 * 8 * 1_000_000_000 / bps),
            next: start,
            seq: 0,
            origin: start,
            outcomes: Vec::new(),
            buf: vec![0; size],
        }
    }

    /// Sends the flow's next datagram at its scheduled instant.
    pub(crate) fn send_next(&mut self, sim: &mut Netsim) {
        let sent_ns = (self.next - self.origin).as_nanos() as u64;
        self.buf[..8].copy_from_slice(&self.seq.to_le_bytes());
        self.buf[8..16].copy_from_slice(&sent_ns.to_le_bytes());
        let outcome = sim.send(self.next, self.from, self.to, &self.buf);
        self.outcomes.push(outcome);
        self.seq += 1;
        self.next += self.gap;
    }
}

/// Sequence number carried by a flow datagram.
pub(crate) fn seq_of(data: &[u8]) -> u64 {
    u64::from_le_bytes(data[..8].try_into().unwrap())
}

/// Send time (since the flow's origin) carried by a flow datagram.
pub(crate) fn sent_of(data: &[u8]) -> Duration {
    Duration::from_nanos(u64::from_le_bytes(data[8..16].try_into().unwrap()))
}

/// Runs `flows` and deliveries in time order until `until`: sends strictly before `until`,
/// deliveries at or before it. Deliveries due at the same instant as a send are handed over
/// first. Each delivery goes to `on`, then its buffer is recycled.
pub(crate) fn run(
    sim: &mut Netsim,
    flows: &mut [Flow],
    until: Instant,
    mut on: impl FnMut(&mut Delivery),
) {
    loop {
        let next_send = flows.iter().map(|f| f.next).filter(|&t| t < until).min();
        let next_event = sim.next_event_time().filter(|&t| t <= until);
        match (next_send, next_event) {
            (None, None) => return,
            (Some(s), e) if e.is_none_or(|e| s < e) => {
                for f in flows.iter_mut().filter(|f| f.next == s) {
                    f.send_next(sim);
                }
            }
            (_, Some(e)) => {
                sim.deliver_due(e, &mut on);
            }
            (Some(_), None) => unreachable!("covered by the guard above"),
        }
    }
}
