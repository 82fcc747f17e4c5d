//! A host's endpoint: many sessions behind one socket, demultiplexed without trusting source
//! addresses alone — handshake packets by (source, handshake id), transport packets by session
//! alias (then the session checks the source and authenticates).
//!
//! Hardening (issue #15):
//! - A first message creates only a small, capped, fast-expiring *half-open* handshake
//!   ([`super::half_open`]); a `Session` exists from msg3 on, and only established sessions
//!   count against `max_sessions` (and only they get "busy" answers).
//! - Under load (too many half-open handshakes, or too many first messages per second) a
//!   first message without a valid cookie gets a stateless cookie reply: no Diffie-Hellman,
//!   no state. The client repeats msg1 with the cookie, which validates its address.
//! - Before the address is validated (msg3 or a cookie) the host sends a client at most
//!   `amplification` times the bytes it received from it, retransmissions included.
//! - Handles are generational; timers live in a binary heap with lazy deletion (a wake costs
//!   O(log n)); event and transmit polling go round robin over the sessions that have work.

use std::{
    cmp::Reverse,
    collections::{BinaryHeap, HashMap, VecDeque},
    fmt,
    net::{IpAddr, SocketAddr},
    sync::Arc,
    time::{Duration, Instant},
};

mod admit;
mod half_open;
mod relays;

use half_open::{CookieJar, HalfOpen};

use super::{Ecn, Event, Session, SessionConfig, SessionError, Transmit};
use crate::{
    identity::IdentityKey,
    relay_client::RelayEvent,
    rng::Rng,
    wire::{Cookie, HandshakeKind, Header, RelayHeader, RelayType, encode_cookie_reply},
};

/// Sessions admitted beyond `max_sessions` just to tell new clients the host is busy.
const BUSY_ANSWERS: usize = 4;
/// Length of one window of the first-message rate estimate.
const RATE_WINDOW: Duration = Duration::from_millis(100);

/// A session inside an [`Endpoint`]: slot index and generation. A handle to a closed session
/// never reaches a newer session in the same slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionHandle {
    index: u32,
    generation: u32,
}

impl SessionHandle {
    /// The handle a single-session driver uses for its one session (no endpoint slot ever
    /// has generation 0).
    pub const SINGLE: Self = Self {
        index: 0,
        generation: 0,
    };

    /// A handle from its parts (tools and tests; an endpoint checks every handle it is given,
    /// so a made-up one reaches nothing).
    pub const fn new(index: u32, generation: u32) -> Self {
        Self { index, generation }
    }

    /// Slot index (for logs).
    pub fn index(self) -> u32 {
        self.index
    }

    /// Generation of the slot when the session was created.
    pub fn generation(self) -> u32 {
        self.generation
    }
}

impl fmt::Display for SessionHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.index, self.generation)
    }
}

/// Limits of an [`Endpoint`].
#[derive(Debug, Clone)]
pub struct EndpointConfig {
    /// Established sessions served at once; more get "busy" answers.
    pub max_sessions: usize,
    /// Half-open handshakes kept at once; beyond, first messages are dropped (or, with a
    /// valid cookie, replace the oldest unvalidated one).
    pub max_half_open: usize,
    /// From this many half-open handshakes on, first messages get cookie replies.
    pub cookie_half_open: usize,
    /// From this many first messages per second on, first messages get cookie replies.
    pub cookie_rate: u32,
    /// A half-open handshake is dropped after this long without msg3.
    pub half_open_timeout: Duration,
    /// Before address validation, at most this many bytes out per byte in (QUIC: 3).
    pub amplification: u64,
    /// Cookie replies waiting to be sent at once; more are dropped.
    pub max_queued_replies: usize,
}

impl EndpointConfig {
    /// Defaults for `max_sessions`.
    pub fn new(max_sessions: usize) -> Self {
        Self {
            max_sessions,
            max_half_open: 256,
            cookie_half_open: 32,
            cookie_rate: 1000,
            half_open_timeout: Duration::from_secs(3),
            amplification: 3,
            max_queued_replies: 1024,
        }
    }
}

/// Counters of an endpoint's defences.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EndpointStats {
    /// Datagrams that matched nothing and were not a valid first handshake message.
    pub unroutable: u64,
    /// Completed handshakes answered "busy" or dropped because the endpoint was full.
    pub refused_full: u64,
    /// Cookie replies sent (the endpoint was under load).
    pub cookies_sent: u64,
    /// First messages whose cookie did not verify (forged, expired, other address).
    pub cookies_invalid: u64,
    /// Half-open handshakes created.
    pub half_open_created: u64,
    /// First messages dropped because the half-open table was full, or half-open handshakes
    /// evicted for a client with a valid cookie, or cookie replies over the queue bound.
    pub half_open_dropped: u64,
    /// Half-open handshakes that expired without msg3.
    pub half_open_expired: u64,
    /// Handshakes whose msg3 failed authentication or policy (the peer is not accepted).
    pub handshakes_failed: u64,
    /// Handshakes completed (sessions created).
    pub handshakes_completed: u64,
    /// Sends to an unvalidated address held back by the anti-amplification limit.
    pub amplification_limited: u64,
    /// Handshake messages that did not decrypt (forged), dropped without ending anything.
    pub forged_handshake_dropped: u64,
    /// Datagrams that arrived marked congestion-experienced.
    pub ecn_ce_received: u64,
    /// Session timers run by `handle_timeout` (only due sessions run: a wake pops the timer
    /// heap, it does not scan every session).
    pub session_timers_run: u64,
}

/// `in_tx`, `in_ev` and `dirty` are independent memberships (ready queues, timer refresh).
#[allow(clippy::struct_excessive_bools)]
#[derive(Debug)]
struct Slot {
    generation: u32,
    session: Option<Session>,
    /// The deadline this slot has in the timer heap (entries with another are stale).
    timer: Option<Instant>,
    busy: bool,
    in_tx: bool,
    in_ev: bool,
    dirty: bool,
}

/// Where a peer's datagrams come from: its address, or for a relayed peer the relay's address
/// and the relay session id (each relayed session is its own "address").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct PeerAddr {
    addr: SocketAddr,
    relay: Option<[u8; 16]>,
}

type HsKey = (PeerAddr, u128);
type RelayKey = (SocketAddr, [u8; 16]);

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum TimerKey {
    Session(u32, u32),
    HalfOpen(PeerAddr, u128),
    Relay(SocketAddr, [u8; 16]),
}

#[derive(Debug, Clone, Copy)]
enum Queued {
    Cookie {
        to: PeerAddr,
        src_ip: Option<IpAddr>,
        handshake_id: u128,
        cookie: Cookie,
    },
    Msg2(HsKey),
}

/// Demultiplexer and owner of a host's sessions and half-open handshakes.
#[derive(Debug)]
pub struct Endpoint {
    cfg: SessionConfig,
    limits: EndpointConfig,
    identity: Arc<IdentityKey>,
    rng: Rng,
    slots: Vec<Slot>,
    free: Vec<u32>,
    by_alias: HashMap<u32, u32>,
    by_handshake: HashMap<HsKey, u32>,
    half_open: HashMap<HsKey, HalfOpen>,
    half_alias: HashMap<u32, HsKey>,
    /// Half-open handshakes in creation order (entries of finished ones are skipped).
    half_order: VecDeque<HsKey>,
    /// Made at the first first message (its clock starts there).
    cookies: Option<CookieJar>,
    queued: VecDeque<Queued>,
    timers: BinaryHeap<Reverse<(Instant, TimerKey)>>,
    ready_tx: VecDeque<u32>,
    ready_ev: VecDeque<u32>,
    dirty: Vec<u32>,
    established: usize,
    busy: usize,
    rate_start: Option<Instant>,
    rate_count: u32,
    rate_prev: u32,
    stats: EndpointStats,
    /// Relay paths (one per relayed session): the host's own lease presentation.
    relays: HashMap<RelayKey, relays::RelaySlot>,
    /// Relay paths that may have a PRESENT / RENEW to send.
    relay_ready: VecDeque<RelayKey>,
    relay_events: VecDeque<([u8; 16], RelayEvent)>,
}

impl Endpoint {
    /// An endpoint that serves up to `max_sessions` sessions configured from `cfg`, with the
    /// default limits of [`EndpointConfig::new`]. `cfg.rng_seed` seeds all its randomness.
    pub fn new(cfg: SessionConfig, identity: Arc<IdentityKey>, max_sessions: usize) -> Self {
        Self::with_config(cfg, identity, EndpointConfig::new(max_sessions))
    }

    /// An endpoint with explicit limits.
    pub fn with_config(
        cfg: SessionConfig,
        identity: Arc<IdentityKey>,
        limits: EndpointConfig,
    ) -> Self {
        Self {
            limits,
            identity,
            rng: Rng::new(cfg.rng_seed),
            cfg,
            slots: Vec::new(),
            free: Vec::new(),
            by_alias: HashMap::new(),
            by_handshake: HashMap::new(),
            half_open: HashMap::new(),
            half_alias: HashMap::new(),
            half_order: VecDeque::new(),
            cookies: None,
            queued: VecDeque::new(),
            timers: BinaryHeap::new(),
            ready_tx: VecDeque::new(),
            ready_ev: VecDeque::new(),
            dirty: Vec::new(),
            established: 0,
            busy: 0,
            rate_start: None,
            rate_count: 0,
            rate_prev: 0,
            stats: EndpointStats::default(),
            relays: HashMap::new(),
            relay_ready: VecDeque::new(),
            relay_events: VecDeque::new(),
        }
    }

    /// Live sessions (including ones only answering "busy"); half-open handshakes excluded.
    pub fn len(&self) -> usize {
        self.established + self.busy
    }

    /// True when no session is live.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Half-open handshakes (waiting for msg3).
    pub fn half_open_len(&self) -> usize {
        self.half_open.len()
    }

    /// The endpoint's counters.
    pub fn stats(&self) -> EndpointStats {
        self.stats
    }

    /// A session by handle; a handle whose session is gone is refused with
    /// [`SessionError::StaleHandle`], even when a newer session uses the same slot.
    pub fn session_mut(&mut self, h: SessionHandle) -> Result<&mut Session, SessionError> {
        let i = h.index;
        match self.slots.get(i as usize) {
            Some(slot) if slot.generation == h.generation && slot.session.is_some() => {}
            _ => return Err(SessionError::StaleHandle),
        }
        // The caller may queue data or close: the session's timer and queues need a look.
        self.touch(i);
        self.slots[i as usize]
            .session
            .as_mut()
            .ok_or(SessionError::StaleHandle)
    }

    /// Handles (all live sessions).
    pub fn handles(&self) -> impl Iterator<Item = SessionHandle> + '_ {
        self.slots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.session.is_some())
            .map(|(i, s)| SessionHandle {
                index: i as u32,
                generation: s.generation,
            })
    }

    fn handle_of(&self, i: u32) -> SessionHandle {
        SessionHandle {
            index: i,
            generation: self.slots[i as usize].generation,
        }
    }

    /// Marks a session as possibly having new transmits, events and a new timer.
    fn touch(&mut self, i: u32) {
        let slot = &mut self.slots[i as usize];
        if !slot.in_tx {
            slot.in_tx = true;
            self.ready_tx.push_back(i);
        }
        if !slot.in_ev {
            slot.in_ev = true;
            self.ready_ev.push_back(i);
        }
        if !slot.dirty {
            slot.dirty = true;
            self.dirty.push(i);
        }
    }

    /// Routes one datagram that arrived from `from` at `local_ip` with ECN mark `ecn`. A
    /// first handshake message creates a half-open handshake (or, under load, gets a cookie
    /// reply); msg3 turns it into a session. Returns the session the datagram went to.
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        from: SocketAddr,
        local_ip: Option<IpAddr>,
        ecn: Option<Ecn>,
        buf: &mut [u8],
    ) -> Option<SessionHandle> {
        if ecn == Some(Ecn::Ce) {
            self.stats.ecn_ce_received += 1;
        }
        let wire_len = buf.len();
        let peer = if RelayHeader::looks_like_relay(buf) {
            // Only from a relay path this host holds a lease for; control is consumed here.
            let sid = self.relay_in(now, from, buf)?;
            PeerAddr {
                addr: from,
                relay: Some(sid),
            }
        } else {
            PeerAddr {
                addr: from,
                relay: None,
            }
        };
        let off = if peer.relay.is_some() {
            RelayHeader::LEN
        } else {
            0
        };
        let idx = match Header::decode(&buf[off..]) {
            Ok(Header::Handshake(h)) => {
                let key = (peer, h.session_id);
                if let Some(&i) = self.by_handshake.get(&key) {
                    i
                } else if self.half_open.contains_key(&key) {
                    self.on_half_open(now, key, h, wire_len, &buf[off..]);
                    return None;
                } else {
                    match HandshakeKind::from_packet_id(h.packet_id) {
                        Some(HandshakeKind::Msg1 | HandshakeKind::Msg1Cookie) => {
                            self.on_first(now, peer, local_ip, wire_len, &buf[off..]);
                        }
                        _ => self.stats.unroutable += 1,
                    }
                    return None;
                }
            }
            Ok(Header::Transport(t)) => {
                if let Some(&i) = self.by_alias.get(&t.alias) {
                    i
                } else {
                    // The client finished its side (it sends Hello) but its msg3 was lost:
                    // msg2 again brings msg3 back, within the budget these datagrams earn.
                    match self.half_alias.get(&t.alias) {
                        Some(&key) if key.0 == peer => {
                            self.credit(now, key, wire_len);
                            self.send_msg2(key);
                        }
                        _ => self.stats.unroutable += 1,
                    }
                    return None;
                }
            }
            Err(_) => {
                self.stats.unroutable += 1;
                return None;
            }
        };
        let slot = &mut self.slots[idx as usize];
        let s = slot.session.as_mut()?;
        if local_ip.is_some() {
            s.local_ip = local_ip;
        }
        let before = s.remote();
        s.handle_datagram(now, from, buf);
        if s.remote() != before {
            // The session moved to a validated new address (roaming): re-key the map.
            let hs = s.handshake_id();
            let relay = s.cfg.relay.map(|r| r.session_id);
            let key = |addr| PeerAddr { addr, relay };
            self.by_handshake.remove(&(key(before), hs));
            self.by_handshake.insert((key(s.remote()), hs), idx);
        }
        self.touch(idx);
        Some(self.handle_of(idx))
    }

    /// Next datagram(s): queued handshake answers first, then the sessions with work, round
    /// robin (one transmit per session per turn).
    pub fn poll_transmit(
        &mut self,
        now: Instant,
        buf: &mut [u8],
        max_datagrams: usize,
    ) -> Option<Transmit> {
        if let Some(t) = self.relay_transmit(now, buf) {
            return Some(t);
        }
        while let Some(q) = self.queued.pop_front() {
            if let Some(t) = self.write_queued(q, buf) {
                return Some(t);
            }
        }
        for _ in 0..self.ready_tx.len() {
            let i = self.ready_tx.pop_front()?;
            let slot = &mut self.slots[i as usize];
            let Some(s) = slot.session.as_mut() else {
                slot.in_tx = false;
                continue;
            };
            let t = s.poll_transmit(now, buf, max_datagrams);
            if !slot.dirty {
                slot.dirty = true;
                self.dirty.push(i);
            }
            if !slot.in_ev {
                slot.in_ev = true;
                self.ready_ev.push_back(i);
            }
            if t.is_some() {
                self.ready_tx.push_back(i);
                return t;
            }
            slot.in_tx = false;
        }
        None
    }

    fn write_queued(&mut self, q: Queued, buf: &mut [u8]) -> Option<Transmit> {
        let to = match q {
            Queued::Cookie { to, .. } => to,
            Queued::Msg2(key) => key.0,
        };
        let prefix = match to.relay {
            Some(session_id) => RelayHeader {
                kind: RelayType::Forward,
                flags: 0,
                session_id,
            }
            .encode(buf)
            .ok()?,
            None => 0,
        };
        let (to, src_ip, n) = match q {
            Queued::Cookie {
                to,
                src_ip,
                handshake_id,
                cookie,
            } => (
                to,
                src_ip,
                encode_cookie_reply(handshake_id, &cookie, buf.get_mut(prefix..)?).ok()?,
            ),
            Queued::Msg2(key) => {
                let h = self.half_open.get_mut(&key)?;
                h.queued = false;
                let out = buf.get_mut(prefix..prefix + h.msg2.len())?;
                out.copy_from_slice(&h.msg2);
                (key.0, h.local_ip, h.msg2.len())
            }
        };
        Some(Transmit {
            destination: to.addr,
            src_ip,
            ecn: None,
            len: prefix + n,
            segment_size: None,
        })
    }

    /// Next event from any session, round robin; closed sessions are removed after their
    /// last event (their handles go stale).
    pub fn poll_event(&mut self) -> Option<(SessionHandle, Event)> {
        while let Some(i) = self.ready_ev.pop_front() {
            let slot = &mut self.slots[i as usize];
            let Some(s) = slot.session.as_mut() else {
                slot.in_ev = false;
                continue;
            };
            if let Some(e) = s.poll_event() {
                self.ready_ev.push_back(i);
                return Some((self.handle_of(i), e));
            }
            slot.in_ev = false;
            if s.is_closed() {
                self.remove(i);
            }
        }
        None
    }

    fn remove(&mut self, i: u32) {
        let slot = &mut self.slots[i as usize];
        let Some(s) = slot.session.take() else {
            return;
        };
        slot.generation = slot.generation.wrapping_add(1).max(1);
        slot.timer = None;
        if slot.busy {
            self.busy -= 1;
        } else {
            self.established -= 1;
        }
        if self.by_alias.get(&s.alias()) == Some(&i) {
            self.by_alias.remove(&s.alias());
        }
        let peer = PeerAddr {
            addr: s.remote(),
            relay: s.cfg.relay.map(|r| r.session_id),
        };
        self.by_handshake.remove(&(peer, s.handshake_id()));
        // The timer heap drops its entries lazily (they name the old generation); the ready
        // queues are cleared of the slot now so a new session there is queued afresh.
        self.ready_tx.retain(|&j| j != i);
        self.ready_ev.retain(|&j| j != i);
        self.dirty.retain(|&j| j != i);
        let slot = &mut self.slots[i as usize];
        slot.in_tx = false;
        slot.in_ev = false;
        slot.dirty = false;
        self.free.push(i);
    }

    /// Pushes the current deadline of every session touched since the last look.
    fn refresh_timers(&mut self) {
        // The list's buffer is kept (steady state allocates nothing).
        let mut dirty = std::mem::take(&mut self.dirty);
        for &i in &dirty {
            let slot = &mut self.slots[i as usize];
            slot.dirty = false;
            let Some(s) = slot.session.as_mut() else {
                continue;
            };
            let t = s.poll_timeout();
            if t != slot.timer {
                slot.timer = t;
                if let Some(t) = t {
                    self.timers
                        .push(Reverse((t, TimerKey::Session(i, slot.generation))));
                }
            }
        }
        dirty.clear();
        self.dirty = dirty;
        // Lazy deletion leaves stale entries behind; rebuild when they dominate.
        let live = self.len() + self.half_open.len();
        if self.timers.len() > 4 * live + 64 {
            self.rebuild_timers();
        }
    }

    /// Drops the stale entries, in place (the heap's buffer is reused).
    fn rebuild_timers(&mut self) {
        let mut v = std::mem::take(&mut self.timers).into_vec();
        v.retain(|&Reverse((t, key))| self.is_current(t, key));
        self.timers = BinaryHeap::from(v);
    }

    /// Is this heap entry still the current deadline of what it names?
    fn is_current(&self, t: Instant, key: TimerKey) -> bool {
        match key {
            TimerKey::Session(i, g) => self
                .slots
                .get(i as usize)
                .is_some_and(|s| s.generation == g && s.session.is_some() && s.timer == Some(t)),
            TimerKey::HalfOpen(a, id) => self
                .half_open
                .get(&(a, id))
                .is_some_and(|h| h.next_timeout() == t),
            TimerKey::Relay(a, sid) => self
                .relays
                .get(&(a, sid))
                .is_some_and(|r| r.timer == Some(t)),
        }
    }

    /// Runs the timers that are due: O(log n) per timer, no scan of every session.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.refresh_timers();
        while let Some(&Reverse((t, key))) = self.timers.peek() {
            if t > now {
                break;
            }
            self.timers.pop();
            if !self.is_current(t, key) {
                continue;
            }
            match key {
                TimerKey::Session(i, _) => {
                    let slot = &mut self.slots[i as usize];
                    slot.timer = None;
                    if let Some(s) = slot.session.as_mut() {
                        s.handle_timeout(now);
                        self.stats.session_timers_run += 1;
                    }
                    self.touch(i);
                }
                TimerKey::HalfOpen(a, id) => self.half_open_timeout(now, (a, id)),
                TimerKey::Relay(a, sid) => self.relay_timeout(now, (a, sid)),
            }
        }
    }

    /// Earliest timer of any session or half-open handshake.
    pub fn poll_timeout(&mut self) -> Option<Instant> {
        self.refresh_timers();
        while let Some(&Reverse((t, key))) = self.timers.peek() {
            if self.is_current(t, key) {
                return Some(t);
            }
            self.timers.pop();
        }
        None
    }
}
