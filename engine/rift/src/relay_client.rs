//! The peer side of a relay session (spec RELAY §1–3, issue #13 item 6), sans-IO: presenting
//! the holder's lease with its binding signature until the relay acknowledges it, renewing
//! before the admission ends, re-presenting (signed) after an address change or when the path
//! went silent, and surfacing a LEASE_REJECT as a typed reason. Time is passed in; the wall
//! clock (for binding timestamps) is derived from one `(Instant, unix ms)` pair given at
//! construction.
//!
//! The session's own datagrams (handshake and transport alike, fault 2) are wrapped in FORWARD
//! by whoever owns the path: a client [`crate::session::Session`] or a host
//! [`crate::session::Endpoint`]; this type only handles the control exchange.

use std::{
    collections::VecDeque,
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use crate::{
    identity::IdentityKey,
    wire::{
        BINDING_MESSAGE_MAX, LeaseAck, LeasePresent, MAX_LEASE_TOKEN, MAX_RELAY_ID, PeerRole,
        PresentBinding, RejectReason, RelayHeader, RelayType, WireError, binding_message,
    },
};

/// Writes a LEASE_PRESENT (or LEASE_RENEW when `renew`) into `out` and returns its length.
/// With `holder = Some((key, relay_id, now_unix_ms))` it carries the binding signature that
/// lets the relay bind or move this peer's address.
pub fn encode_present(
    out: &mut [u8],
    renew: bool,
    session_id: [u8; 16],
    role: PeerRole,
    token: &str,
    holder: Option<(&IdentityKey, &str, u64)>,
) -> Result<usize, WireError> {
    let binding = match holder {
        Some((key, relay_id, ts)) => {
            let mut msg = [0u8; BINDING_MESSAGE_MAX];
            let n = binding_message(&session_id, role, relay_id, ts, &mut msg)?;
            Some(PresentBinding {
                timestamp_ms: ts,
                signature: key.sign(&msg[..n]),
            })
        }
        None => None,
    };
    let header = RelayHeader {
        kind: if renew {
            RelayType::LeaseRenew
        } else {
            RelayType::LeasePresent
        },
        flags: 0,
        session_id,
    };
    let h = header.encode(out)?;
    let p = LeasePresent {
        role,
        token,
        binding,
    }
    .encode(&mut out[h..])?;
    Ok(h + p)
}

/// A relay's answer to a presentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// Admitted.
    Ack(LeaseAck),
    /// Refused.
    Reject(RejectReason),
}

/// Parses a LEASE_ACK or LEASE_REJECT datagram (with its session id).
pub fn decode_answer(datagram: &[u8]) -> Result<([u8; 16], Answer), WireError> {
    let h = RelayHeader::decode(datagram)?;
    let payload = &datagram[RelayHeader::LEN..];
    match h.kind {
        RelayType::LeaseAck => Ok((h.session_id, Answer::Ack(LeaseAck::decode(payload)?))),
        RelayType::LeaseReject => {
            Ok((h.session_id, Answer::Reject(RejectReason::decode(payload)?)))
        }
        _ => Err(WireError::BadRelayPayload(
            "not a LEASE_ACK or LEASE_REJECT",
        )),
    }
}

/// What a peer needs to use one relay session: where the relay is, which relay and session the
/// lease names, the holder's role, and the lease itself (a PASETO string from the master).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayLease {
    /// The relay's UDP address (the master's `addr`).
    pub relay_addr: SocketAddr,
    /// The relay's id (the lease's `rid`), covered by the binding signature.
    pub relay_id: String,
    /// The relay session id (the lease's `sid`); never nil.
    pub session_id: [u8; 16],
    /// The holder's role in the relay session (from the lease, fault 3).
    pub role: PeerRole,
    /// The lease token.
    pub token: String,
}

/// Tunables of a [`RelayClient`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RelayClientConfig {
    /// First retransmission timeout of an unanswered PRESENT or RENEW (doubles each retry).
    pub initial_rto: Duration,
    /// Largest retransmission timeout.
    pub max_rto: Duration,
    /// Sends of one request before giving up ([`RelayEvent::GaveUp`]).
    pub max_attempts: u32,
    /// Longest wait without any datagram from the relay, once the session's traffic flowed,
    /// before presenting again (signed): the path broke (a NAT rebinding, a new local port).
    /// Above the session's keepalive interval, so an idle session does not re-present.
    pub silence: Duration,
    /// Shortest such wait. Between the two, the wait is [`SILENCE_GAPS`] × the recent largest
    /// gap between arrivals: a stream at 60 fps re-presents after `min_silence`, an idle
    /// session living on keepalives after `silence`.
    pub min_silence: Duration,
}

/// A path is taken as broken after this many of its recent largest gaps between arrivals.
pub const SILENCE_GAPS: u32 = 8;

/// Time over which the recent largest gap between arrivals halves.
const GAP_HALF_LIFE: Duration = Duration::from_secs(1);

impl Default for RelayClientConfig {
    fn default() -> Self {
        Self {
            initial_rto: Duration::from_millis(250),
            max_rto: Duration::from_secs(2),
            max_attempts: 10,
            silence: Duration::from_secs(1),
            min_silence: Duration::from_millis(200),
        }
    }
}

/// Why a relay path could not be set up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RelayClientError {
    /// The lease names the nil session.
    #[error("relay session id is nil")]
    NilSession,
    /// The relay id is empty or too long for a binding.
    #[error("relay id length out of range")]
    RelayId,
    /// The token is empty or larger than a relay accepts.
    #[error("lease token length out of range")]
    Token,
}

/// What happened on a relay path, for the application.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelayEvent {
    /// The relay accepted a PRESENT or RENEW.
    Admitted(LeaseAck),
    /// The relay refused the lease; the path is dead.
    Rejected(RejectReason),
    /// No answer after [`RelayClientConfig::max_attempts`] sends; the path is dead.
    GaveUp,
    /// An empty RENEW cannot extend the admission past the lease's own expiry: supply a fresh
    /// lease with [`RelayClient::renew_with`] before `expires_unix_ms`.
    LeaseEnding {
        /// When the relay stops forwarding, Unix milliseconds.
        expires_unix_ms: u64,
    },
}

/// Counters of a [`RelayClient`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RelayClientStats {
    /// LEASE_PRESENT datagrams sent (retransmissions included).
    pub presents_sent: u64,
    /// LEASE_RENEW datagrams sent.
    pub renews_sent: u64,
    /// LEASE_ACKs accepted.
    pub acks: u64,
    /// LEASE_REJECTs received.
    pub rejects: u64,
    /// Re-presentations started by a local address change or a silent path.
    pub represents: u64,
    /// Control datagrams from the relay that did not decode (dropped).
    pub malformed: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Request {
    Present,
    Renew,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Presenting,
    Admitted,
    Failed,
}

/// The sans-IO peer side of one relay session.
#[derive(Debug)]
pub struct RelayClient {
    lease: RelayLease,
    identity: Arc<IdentityKey>,
    cfg: RelayClientConfig,
    epoch: (Instant, u64),
    state: State,
    pending: Option<Request>,
    send_due: Option<Instant>,
    attempts: u32,
    rto: Duration,
    fresh: Option<String>,
    last_binding_ms: u64,
    expires_unix_ms: u64,
    renew_at: Option<Instant>,
    last_rx: Option<Instant>,
    /// Largest recent gap between arrivals, decaying by half per [`GAP_HALF_LIFE`]; `None`
    /// until two arrivals have been seen.
    gap: Option<Duration>,
    /// Re-presentations since the last arrival: each doubles the wait (up to 32×).
    backoff: u32,
    /// The relay's hard limit for this session from its last LEASE_ACK, kbit/s.
    hard_limit_kbps: Option<u32>,
    events: VecDeque<RelayEvent>,
    stats: RelayClientStats,
}

impl RelayClient {
    /// A client that presents `lease` at once. `now_unix_ms` is the wall clock at `now`
    /// (binding timestamps and the relay's expiry are wall-clock times).
    pub fn new(
        now: Instant,
        now_unix_ms: u64,
        lease: RelayLease,
        identity: Arc<IdentityKey>,
        cfg: RelayClientConfig,
    ) -> Result<Self, RelayClientError> {
        if lease.session_id == [0; 16] {
            return Err(RelayClientError::NilSession);
        }
        if lease.relay_id.is_empty() || lease.relay_id.len() > MAX_RELAY_ID {
            return Err(RelayClientError::RelayId);
        }
        check_token(&lease.token)?;
        let mut c = Self {
            lease,
            identity,
            cfg,
            epoch: (now, now_unix_ms),
            state: State::Presenting,
            pending: None,
            send_due: None,
            attempts: 0,
            rto: cfg.initial_rto,
            fresh: None,
            last_binding_ms: 0,
            expires_unix_ms: 0,
            renew_at: None,
            last_rx: None,
            gap: None,
            backoff: 0,
            hard_limit_kbps: None,
            events: VecDeque::new(),
            stats: RelayClientStats::default(),
        };
        c.start(now, Request::Present);
        Ok(c)
    }

    /// The relay's address.
    pub fn relay_addr(&self) -> SocketAddr {
        self.lease.relay_addr
    }

    /// The relay's hard limit for this session (its LEASE_ACK), kbit/s: a sender above it
    /// loses what the relay's bucket drops, and no queue builds to warn a delay-based
    /// controller. `None` before the first ack.
    pub fn hard_limit_kbps(&self) -> Option<u32> {
        self.hard_limit_kbps
    }

    /// The relay session id.
    pub fn session_id(&self) -> [u8; 16] {
        self.lease.session_id
    }

    /// True while the relay has admitted this peer (a re-presentation in flight included).
    pub fn is_admitted(&self) -> bool {
        self.expires_unix_ms > 0 && self.state != State::Failed
    }

    /// True once the relay rejected the lease or stopped answering.
    pub fn is_failed(&self) -> bool {
        self.state == State::Failed
    }

    /// Counters.
    pub fn stats(&self) -> RelayClientStats {
        self.stats
    }

    /// Next event for the application.
    pub fn poll_event(&mut self) -> Option<RelayEvent> {
        self.events.pop_front()
    }

    fn unix_ms(&self, now: Instant) -> u64 {
        let ms = now.saturating_duration_since(self.epoch.0).as_millis();
        self.epoch.1 + u64::try_from(ms).unwrap_or(u64::MAX)
    }

    fn start(&mut self, now: Instant, req: Request) {
        if self.state == State::Failed {
            return;
        }
        self.pending = Some(req);
        self.send_due = Some(now);
        self.attempts = 0;
        self.rto = self.cfg.initial_rto;
    }

    /// The application has a fresh lease (the old one nears its `exp`): it goes out in a
    /// LEASE_RENEW (or in the PRESENT, if none was acknowledged yet).
    pub fn renew_with(&mut self, now: Instant, token: String) -> Result<(), RelayClientError> {
        check_token(&token)?;
        if self.state == State::Admitted {
            self.fresh = Some(token);
            self.start(now, Request::Renew);
        } else {
            self.lease.token = token;
        }
        Ok(())
    }

    /// The local address changed (a new socket, a new interface): present again, signed, so
    /// the relay moves this peer's binding.
    pub fn local_address_changed(&mut self, now: Instant) {
        if self.state == State::Failed {
            return;
        }
        self.stats.represents += 1;
        self.start(now, Request::Present);
    }

    /// A FORWARD datagram of this session arrived from the relay (the path works).
    pub fn note_received(&mut self, now: Instant) {
        if let Some(last) = self.last_rx
            && self.backoff == 0
        {
            let since = now.saturating_duration_since(last);
            let decay = 0.5f64.powf(since.as_secs_f64() / GAP_HALF_LIFE.as_secs_f64());
            self.gap = Some(since.max(self.gap.unwrap_or_default().mul_f64(decay)));
        }
        self.last_rx = Some(now);
        self.backoff = 0;
    }

    /// How long the path may stay silent before the next re-presentation (see
    /// [`RelayClientConfig::min_silence`]); the longest while no gap is known yet.
    fn silence(&self) -> Duration {
        let (lo, hi) = (self.cfg.min_silence.min(self.cfg.silence), self.cfg.silence);
        let base = self.gap.map_or(hi, |g| (g * SILENCE_GAPS).clamp(lo, hi));
        base * (1 << self.backoff.min(5))
    }

    /// A LEASE_ACK or LEASE_REJECT (`kind`, and the payload after the header) from the relay.
    pub fn handle_control(&mut self, now: Instant, kind: RelayType, payload: &[u8]) {
        if self.state == State::Failed {
            return;
        }
        match kind {
            RelayType::LeaseAck => {
                let Ok(ack) = LeaseAck::decode(payload) else {
                    self.stats.malformed += 1;
                    return;
                };
                self.on_ack(now, ack);
            }
            RelayType::LeaseReject => {
                let Ok(reason) = RejectReason::decode(payload) else {
                    self.stats.malformed += 1;
                    return;
                };
                self.stats.rejects += 1;
                self.fail(RelayEvent::Rejected(reason));
            }
            _ => self.stats.malformed += 1,
        }
    }

    fn on_ack(&mut self, now: Instant, ack: LeaseAck) {
        self.stats.acks += 1;
        let Some(req) = self.pending.take() else {
            // A duplicate answer: nothing was waiting for it.
            return;
        };
        self.send_due = None;
        let renewed_fresh = req == Request::Renew && self.fresh.is_some();
        if let Some(t) = self.fresh.take().filter(|_| renewed_fresh) {
            self.lease.token = t;
        }
        let stuck =
            req == Request::Renew && !renewed_fresh && ack.expires_unix_ms <= self.expires_unix_ms;
        self.state = State::Admitted;
        self.expires_unix_ms = ack.expires_unix_ms;
        self.hard_limit_kbps = Some(ack.hard_limit_kbps);
        self.events.push_back(RelayEvent::Admitted(ack));
        let left = ack.expires_unix_ms.saturating_sub(self.unix_ms(now));
        if stuck || left == 0 {
            // Only a fresh lease extends it now.
            self.renew_at = None;
            self.events.push_back(RelayEvent::LeaseEnding {
                expires_unix_ms: ack.expires_unix_ms,
            });
        } else {
            // Renew with a quarter of the admission left.
            self.renew_at = Some(now + Duration::from_millis(left - left / 4));
        }
    }

    fn fail(&mut self, e: RelayEvent) {
        self.state = State::Failed;
        self.pending = None;
        self.send_due = None;
        self.renew_at = None;
        self.events.push_back(e);
    }

    fn silence_deadline(&self) -> Option<Instant> {
        if self.state != State::Admitted || self.pending.is_some() {
            return None;
        }
        self.last_rx.map(|t| t + self.silence())
    }

    /// When [`Self::handle_timeout`] should next run.
    pub fn poll_timeout(&self) -> Option<Instant> {
        [self.send_due, self.renew_at, self.silence_deadline()]
            .into_iter()
            .flatten()
            .min()
    }

    /// Runs what is due: retransmission give-up, renewal, silence re-presentation.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.send_due.is_some_and(|t| t <= now) && self.attempts >= self.cfg.max_attempts {
            self.fail(RelayEvent::GaveUp);
            return;
        }
        if self.renew_at.is_some_and(|t| t <= now) && self.pending.is_none() {
            self.renew_at = None;
            self.start(now, Request::Renew);
        }
        if self.silence_deadline().is_some_and(|t| t <= now) {
            self.stats.represents += 1;
            self.last_rx = Some(now);
            self.backoff += 1;
            self.start(now, Request::Present);
        }
    }

    /// True when [`Self::poll_transmit`] has a datagram to write at `now`.
    pub fn wants_transmit(&self, now: Instant) -> bool {
        self.send_due.is_some_and(|t| t <= now) && self.attempts < self.cfg.max_attempts
    }

    /// Writes the due PRESENT or RENEW into `buf` and returns its length (the destination is
    /// [`Self::relay_addr`]); `None` when nothing is due or `buf` is too small.
    pub fn poll_transmit(&mut self, now: Instant, buf: &mut [u8]) -> Option<usize> {
        if !self.wants_transmit(now) {
            return None;
        }
        let req = self.pending?;
        let sid = self.lease.session_id;
        let n = match (req, self.fresh.as_deref()) {
            (Request::Present, _) => {
                // Strictly increasing per peer, as the relay requires.
                let ts = self.unix_ms(now).max(self.last_binding_ms + 1);
                self.last_binding_ms = ts;
                let holder = Some((&*self.identity, self.lease.relay_id.as_str(), ts));
                let n = encode_present(buf, false, sid, self.lease.role, &self.lease.token, holder)
                    .ok()?;
                self.stats.presents_sent += 1;
                n
            }
            (Request::Renew, Some(token)) => {
                let n = encode_present(buf, true, sid, self.lease.role, token, None).ok()?;
                self.stats.renews_sent += 1;
                n
            }
            (Request::Renew, None) => {
                let n = RelayHeader {
                    kind: RelayType::LeaseRenew,
                    flags: 0,
                    session_id: sid,
                }
                .encode(buf)
                .ok()?;
                self.stats.renews_sent += 1;
                n
            }
        };
        self.attempts += 1;
        self.send_due = Some(now + self.rto);
        self.rto = (self.rto * 2).min(self.cfg.max_rto);
        Some(n)
    }
}

fn check_token(token: &str) -> Result<(), RelayClientError> {
    if token.is_empty() || token.len() > MAX_LEASE_TOKEN {
        return Err(RelayClientError::Token);
    }
    Ok(())
}

#[cfg(test)]
mod tests;
