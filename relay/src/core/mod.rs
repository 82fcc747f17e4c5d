//! The sans-IO relay core: session table, lease admission, address binding, token buckets and
//! forwarding decisions. No sockets and no clock: every call takes [`Now`], and a datagram's
//! fate comes back as a [`Verdict`] for the I/O shell to carry out.
//!
//! Rules (spec RELAY §1–3, with the original's faults fixed; see relay/README.md):
//! - a lease is verified once and cached by the SHA-256 of its token; its own `exp` is tracked;
//!   LEASE_RENEW carries a fresh lease (or, empty, extends up to the cached lease's `exp`);
//! - roles come from the lease, one slot per role, locked to the first holder identity;
//! - binding or moving a peer's address needs the holder's Ed25519 signature over
//!   [`wavry_rift::wire::binding_message`] (±30 s, strictly increasing per peer);
//! - FORWARD does no crypto: exact source address → the other peer, under a per-sender byte
//!   bucket; no replay window (end-to-end AEAD already has one; a relay window broke NACK and
//!   handshake retransmissions);
//! - nothing is sent to an address that has not presented a valid lease, except a 22-byte
//!   LEASE_REJECT (never larger than the request) under per-source and global limits.

mod admit;
pub mod bucket;
pub mod iptable;
pub mod stats;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use wavry_rift::identity::WavryId;
use wavry_rift::lease::LeaseVerifier;
use wavry_rift::wire::{MAX_RELAY_DATAGRAM, PeerRole, RejectReason, RelayHeader, RelayType};

use bucket::TokenBucket;
use iptable::{IpBursts, IpTable};
use stats::Stats;

/// Largest reply the core writes: a LEASE_ACK (20-byte header + 16).
pub const REPLY_MAX: usize = RelayHeader::LEN + 16;
/// Size of a LEASE_REJECT (20-byte header + 2); smaller than any request that can earn one.
pub const REJECT_LEN: usize = RelayHeader::LEN + 2;
/// Allowed difference between a binding timestamp and the relay's clock.
pub const BINDING_SKEW_MS: i64 = 30_000;
/// Default session soft limit when the lease has none (kbit/s).
pub const DEFAULT_SOFT_KBPS: u32 = 50_000;
/// Default session hard limit when the lease has none (kbit/s).
pub const DEFAULT_HARD_KBPS: u32 = 100_000;

/// A change to the pairs (session id, address) that may send FORWARD datagrams, for a kernel
/// filter that drops the rest before they reach the shard ([`RelayCore::track_bindings`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BindingEvent {
    /// `addr` was bound to a role of session `id`.
    Bound([u8; 16], SocketAddr),
    /// No role of session `id` is bound to `addr` any more.
    Unbound([u8; 16], SocketAddr),
}

/// The time of a call: a monotonic reading for deadlines and buckets, and the wall clock for
/// lease and binding timestamps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Now {
    /// Monotonic nanoseconds (any origin).
    pub mono_ns: u64,
    /// Wall clock, Unix milliseconds.
    pub unix_ms: i64,
}

/// What to do with a datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Nothing goes out.
    Drop,
    /// Send the datagram unchanged to this address (the other, admitted peer).
    Forward(SocketAddr),
    /// Send the first `len` bytes of the reply buffer to this address (always the source).
    Reply(SocketAddr, usize),
}

/// How leases are checked.
#[derive(Debug, Clone)]
pub enum LeaseAuth {
    /// Verify PASETO leases against the master key.
    Verify(LeaseVerifier),
    /// `--allow-insecure-dev` with `WAVRY_ALLOW_INSECURE_RELAY=1`: any well-formed token is
    /// accepted without verification and no binding signature is needed. Never in production.
    InsecureDev,
}

/// Tunables of the core; [`CoreConfig::new`] gives the documented defaults.
#[derive(Debug, Clone)]
pub struct CoreConfig {
    /// This relay's id (the `rid` leases must name; signed in bindings).
    pub relay_id: String,
    /// Most sessions held (this shard's share).
    pub max_sessions: usize,
    /// New sessions are refused once this share of `max_sessions` is used (50..=100 %).
    pub load_shed_pct: u8,
    /// A session with no forwarded datagram for this long is removed.
    pub idle_timeout: Duration,
    /// One presentation admits a peer for at most this long (and never past the lease `exp`).
    pub lease_duration: Duration,
    /// Relay-wide cap on a session's hard limit (kbit/s).
    pub max_bitrate_kbps: u32,
    /// Per-source-IP rate of datagrams not forwarded for an admitted peer (control and junk).
    pub ip_rate_pps: f64,
    /// Most source IPs tracked (older ones are evicted).
    pub ip_table_size: usize,
    /// Verifications (lease or binding signature) per second, relay-wide.
    pub verify_global_per_s: f64,
    /// Verifications per second per source IP.
    pub verify_per_ip_per_s: f64,
    /// LEASE_REJECTs per second per source IP.
    pub reject_per_ip_per_s: f64,
    /// LEASE_REJECTs per second, relay-wide (spoofed-source floods).
    pub reject_global_per_s: f64,
}

impl CoreConfig {
    /// The defaults for relay `relay_id`.
    pub fn new(relay_id: impl Into<String>) -> Self {
        Self {
            relay_id: relay_id.into(),
            max_sessions: 100,
            load_shed_pct: 95,
            idle_timeout: Duration::from_secs(60),
            lease_duration: Duration::from_secs(300),
            max_bitrate_kbps: DEFAULT_HARD_KBPS,
            ip_rate_pps: 1000.0,
            ip_table_size: 65_536,
            verify_global_per_s: 2000.0,
            verify_per_ip_per_s: 20.0,
            reject_per_ip_per_s: 5.0,
            reject_global_per_s: 1000.0,
        }
    }

    fn ip_bursts(&self) -> IpBursts {
        IpBursts {
            packets: self.ip_rate_pps.max(1.0),
            verify: self.verify_per_ip_per_s.max(1.0),
            rejects: self.reject_per_ip_per_s.max(1.0),
        }
    }
}

/// One admitted peer of a session.
#[derive(Debug, Clone)]
struct Peer {
    addr: SocketAddr,
    /// Holder identity the binding signatures are checked against (None in insecure dev).
    identity: Option<WavryId>,
    /// Lease `sub`, locked for this role once admitted.
    sub: Box<str>,
    /// SHA-256 of the verified token (the cache key).
    token_digest: [u8; 32],
    /// The token's own `exp`, Unix ms.
    token_exp_unix_ms: i64,
    /// Relay-side admission end: min(token exp, presentation + lease_duration).
    expires_mono_ns: u64,
    /// Same, Unix ms (sent in LEASE_ACK).
    expires_unix_ms: i64,
    /// The verified lease's own limits (kbit/s), kept for cache hits.
    lease_kbps: (u32, u32),
    /// Last accepted binding timestamp (Unix ms).
    last_binding_ms: u64,
    /// Bytes this peer may send.
    bucket: TokenBucket,
}

/// A relay session: one slot per role.
#[derive(Debug, Clone)]
struct Session {
    peers: [Option<Peer>; 2],
    soft_kbps: u32,
    hard_kbps: u32,
    last_activity_ns: u64,
}

impl Session {
    fn rate_bytes_per_s(&self) -> f64 {
        f64::from(self.hard_kbps) * 125.0
    }

    /// Burst: one second at the soft limit (never below 64 KiB).
    fn burst_bytes(&self) -> f64 {
        (f64::from(self.soft_kbps) * 125.0).max(65_536.0)
    }
}

fn slot(role: PeerRole) -> usize {
    match role {
        PeerRole::Client => 0,
        PeerRole::Server => 1,
    }
}

/// The relay state machine of one shard.
#[derive(Debug)]
pub struct RelayCore {
    cfg: CoreConfig,
    auth: LeaseAuth,
    /// Keyed by session id. foldhash, randomly seeded per table: the lookup runs for every
    /// datagram, forwarded or junk, and SipHash was a tenth of a junk flood's relay time;
    /// keys are random ids from the master, and only admitted leases insert.
    sessions: HashMap<[u8; 16], Session, foldhash::fast::RandomState>,
    ips: IpTable,
    verify_global: TokenBucket,
    reject_global: TokenBucket,
    stats: Arc<Stats>,
    /// Binding changes not yet taken by the shell (`None`: not tracked).
    bindings: Option<Vec<BindingEvent>>,
}

impl RelayCore {
    /// A core with an empty table; `now_ns` starts its global buckets full.
    pub fn new(cfg: CoreConfig, auth: LeaseAuth, stats: Arc<Stats>, now_ns: u64) -> Self {
        let sessions = HashMap::with_capacity_and_hasher(
            cfg.max_sessions,
            foldhash::fast::RandomState::default(),
        );
        let ips = IpTable::new(cfg.ip_table_size);
        let verify_global = TokenBucket::full(cfg.verify_global_per_s.max(1.0), now_ns);
        let reject_global = TokenBucket::full(cfg.reject_global_per_s.max(1.0), now_ns);
        Self {
            cfg,
            auth,
            sessions,
            ips,
            verify_global,
            reject_global,
            stats,
            bindings: None,
        }
    }

    /// Records every change to the bound (session id, address) pairs from now on, for
    /// [`Self::drain_bindings`]. The shell must drain after every call that may change them
    /// ([`Self::on_datagram`], [`Self::cleanup`]): the buffer grows until it does.
    pub fn track_bindings(&mut self) {
        self.bindings.get_or_insert_with(Vec::new);
    }

    /// Binding changes wait to be drained (cheap: the shell asks after every batch).
    #[inline]
    pub fn bindings_pending(&self) -> bool {
        self.bindings.as_ref().is_some_and(|v| !v.is_empty())
    }

    /// Takes the binding changes recorded since the last call, oldest first.
    pub fn drain_bindings(&mut self) -> impl Iterator<Item = BindingEvent> + '_ {
        self.bindings.iter_mut().flat_map(|v| v.drain(..))
    }

    /// The configuration.
    pub fn config(&self) -> &CoreConfig {
        &self.cfg
    }

    /// This shard's counters.
    pub fn stats(&self) -> &Arc<Stats> {
        &self.stats
    }

    /// Sessions in the table.
    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    /// Decides the fate of one received datagram. Replies (ACK / REJECT) are written into
    /// `reply`. Never allocates for FORWARD datagrams.
    #[inline]
    pub fn on_datagram(
        &mut self,
        now: Now,
        src: SocketAddr,
        datagram: &[u8],
        reply: &mut [u8; REPLY_MAX],
    ) -> Verdict {
        self.stats.packets_rx.inc();
        self.stats.bytes_rx.add(datagram.len() as u64);
        if datagram.len() > MAX_RELAY_DATAGRAM || !RelayHeader::looks_like_relay(datagram) {
            return self.junk(now, src, |s| &s.invalid_packets);
        }
        let Ok(header) = RelayHeader::decode(datagram) else {
            return self.junk(now, src, |s| &s.invalid_packets);
        };
        match header.kind {
            RelayType::Forward => self.forward(now, src, &header.session_id, datagram.len()),
            RelayType::LeasePresent | RelayType::LeaseRenew => {
                self.admit(now, src, &header, &datagram[RelayHeader::LEN..], reply)
            }
            RelayType::LeaseAck | RelayType::LeaseReject => {
                self.junk(now, src, |s| &s.invalid_packets)
            }
        }
    }

    /// The hot path: exact source match, expiry, byte bucket, destination.
    #[inline]
    fn forward(&mut self, now: Now, src: SocketAddr, sid: &[u8; 16], len: usize) -> Verdict {
        let Some(s) = self.sessions.get_mut(sid) else {
            return self.junk(now, src, |s| &s.session_not_found_packets);
        };
        let from = match &s.peers {
            [Some(p), _] if p.addr == src => 0,
            [_, Some(p)] if p.addr == src => 1,
            _ => return self.junk(now, src, |s| &s.unknown_peer_packets),
        };
        let (rate, burst) = (s.rate_bytes_per_s(), s.burst_bytes());
        let [a, b] = &mut s.peers;
        let (me, other) = if from == 0 { (a, b) } else { (b, a) };
        let Some(me) = me.as_mut() else {
            return Verdict::Drop;
        };
        let dst = match other {
            Some(o) if o.expires_mono_ns > now.mono_ns && me.expires_mono_ns > now.mono_ns => {
                o.addr
            }
            _ => {
                self.stats.session_not_active_packets.inc();
                self.stats.dropped_packets.inc();
                return Verdict::Drop;
            }
        };
        if !me.bucket.take(now.mono_ns, rate, burst, len as f64) {
            self.stats.rate_limited_packets.inc();
            self.stats.dropped_packets.inc();
            return Verdict::Drop;
        }
        s.last_activity_ns = now.mono_ns;
        self.stats.packets_forwarded.inc();
        self.stats.bytes_forwarded.add(len as u64);
        Verdict::Forward(dst)
    }

    /// A datagram that earns nothing: charge the source's packet budget and count it.
    fn junk(
        &mut self,
        now: Now,
        src: SocketAddr,
        counter: fn(&Stats) -> &stats::Counter,
    ) -> Verdict {
        let bursts = self.cfg.ip_bursts();
        let rate = self.cfg.ip_rate_pps;
        if self.ips.entry(src.ip(), now.mono_ns, bursts).packets.take(
            now.mono_ns,
            rate,
            bursts.packets,
            1.0,
        ) {
            counter(&self.stats).inc();
        } else {
            self.stats.rate_limited_packets.inc();
        }
        self.stats.dropped_packets.inc();
        Verdict::Drop
    }

    /// Removes expired peers, sessions whose every lease expired, and idle sessions.
    /// Call every `--cleanup-interval-secs`; allocates only to grow the binding-event buffer
    /// (when tracked).
    pub fn cleanup(&mut self, now: Now) {
        let idle_ns = u64::try_from(self.cfg.idle_timeout.as_nanos()).unwrap_or(u64::MAX);
        let stats = &self.stats;
        let bindings = &mut self.bindings;
        self.sessions.retain(|sid, s| {
            for i in 0..2 {
                if s.peers[i]
                    .as_ref()
                    .is_some_and(|p| p.expires_mono_ns <= now.mono_ns)
                {
                    let gone = s.peers[i].take().map(|p| p.addr);
                    if let (Some(ev), Some(a)) = (bindings.as_mut(), gone)
                        && !s.peers.iter().flatten().any(|p| p.addr == a)
                    {
                        ev.push(BindingEvent::Unbound(*sid, a));
                    }
                }
            }
            if s.peers.iter().all(Option::is_none) {
                stats.cleanup_expired_sessions.inc();
                return false;
            }
            if now.mono_ns.saturating_sub(s.last_activity_ns) > idle_ns {
                stats.cleanup_idle_sessions.inc();
                if let Some(ev) = bindings.as_mut() {
                    let addrs = s.peers.each_ref().map(|p| p.as_ref().map(|p| p.addr));
                    if let Some(a) = addrs[0] {
                        ev.push(BindingEvent::Unbound(*sid, a));
                    }
                    if let Some(b) = addrs[1].filter(|b| addrs[0] != Some(*b)) {
                        ev.push(BindingEvent::Unbound(*sid, b));
                    }
                }
                return false;
            }
            true
        });
        self.publish_gauges();
    }

    fn publish_gauges(&self) {
        self.stats.active_sessions.store(
            self.sessions.len() as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
    }

    /// Writes a LEASE_REJECT for `sid` if the request was at least as large and the source's
    /// and the relay's reject budgets allow; otherwise drops.
    fn reject(
        &mut self,
        now: Now,
        src: SocketAddr,
        sid: &[u8; 16],
        request_len: usize,
        reason: RejectReason,
        reply: &mut [u8; REPLY_MAX],
    ) -> Verdict {
        self.stats.auth_reject_packets.inc();
        self.stats.dropped_packets.inc();
        match reason {
            RejectReason::SessionFull => self.stats.session_full_rejects.inc(),
            RejectReason::WrongRelay => self.stats.wrong_relay_rejects.inc(),
            RejectReason::Expired => self.stats.expired_lease_rejects.inc(),
            _ => {}
        }
        let bursts = self.cfg.ip_bursts();
        let per_ip = self.cfg.reject_per_ip_per_s;
        let allowed = request_len >= REJECT_LEN
            && self.ips.entry(src.ip(), now.mono_ns, bursts).rejects.take(
                now.mono_ns,
                per_ip,
                bursts.rejects,
                1.0,
            )
            && self.reject_global.take(
                now.mono_ns,
                self.cfg.reject_global_per_s,
                self.cfg.reject_global_per_s.max(1.0),
                1.0,
            );
        if !allowed {
            self.stats.rejects_suppressed.inc();
            return Verdict::Drop;
        }
        let header = RelayHeader {
            kind: RelayType::LeaseReject,
            flags: 0,
            session_id: *sid,
        };
        if header.encode(&mut reply[..]).is_err() || reason.encode(&mut reply[20..]).is_err() {
            return Verdict::Drop;
        }
        self.stats.rejects_sent.inc();
        Verdict::Reply(src, REJECT_LEN)
    }
}
