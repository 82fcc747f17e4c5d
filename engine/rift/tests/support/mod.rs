//! Test harness: a client and a host session connected through a small deterministic network
//! model on a virtual clock (quinn's `Pair`, str0m's `progress`). Everything is in-process.

#![allow(dead_code, unreachable_pub)]

pub mod stream;

use std::{
    collections::BinaryHeap,
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use wavry_rift::{
    crypto::PeerPolicy,
    identity::IdentityKey,
    session::{Event, Role, Session, SessionConfig},
    wire::Header,
};

/// Impairments of one direction.
#[derive(Debug, Clone, Copy, Default)]
pub struct Link {
    pub delay: Duration,
    /// Bernoulli loss probability (used when `burst` is 0).
    pub loss: f64,
    /// Gilbert–Elliott: mean burst length in packets (0 = Bernoulli). With `loss` as the
    /// stationary mean: bad→good p = 1/burst, good→bad p = loss·p_bg/(1−loss); all packets in
    /// the bad state are lost.
    pub burst: f64,
}

#[derive(PartialEq, Eq)]
struct InFlight {
    at: Instant,
    seq: u64,
    to_host: bool,
    data: Vec<u8>,
}

impl Ord for InFlight {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        o.at.cmp(&self.at).then(o.seq.cmp(&self.seq))
    }
}
impl PartialOrd for InFlight {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}

/// Deterministic xorshift.
pub struct Rng(u64);
impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed.max(1))
    }
    pub fn next_f64(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Drops (returns false) or alters a datagram in flight: `(to_host, bytes)`.
pub type Filter = Box<dyn FnMut(bool, &mut Vec<u8>) -> bool>;

pub struct Pair {
    pub now: Instant,
    pub client: Session,
    pub host: Option<Session>,
    pub host_cfg: SessionConfig,
    pub host_key: Arc<IdentityKey>,
    pub client_key: Arc<IdentityKey>,
    pub client_addr: SocketAddr,
    pub host_addr: SocketAddr,
    pub up: Link,
    pub down: Link,
    pub client_events: Vec<(Instant, Event)>,
    pub host_events: Vec<(Instant, Event)>,
    bad: [bool; 2],
    pub lost: [u64; 2],
    pub carried: [u64; 2],
    pub max_datagram_seen: usize,
    /// Optional hook to drop/alter datagrams: (to_host, bytes) -> keep.
    pub filter: Option<Filter>,
    inflight: BinaryHeap<InFlight>,
    seq: u64,
    rng: Rng,
    buf: Vec<u8>,
}

impl Pair {
    pub fn new(seed: u64, up: Link, down: Link) -> Self {
        let host_key = Arc::new(IdentityKey::from_seed([1; 32]).unwrap());
        let client_key = Arc::new(IdentityKey::from_seed([2; 32]).unwrap());
        let host_cfg = SessionConfig::new(Role::Host, PeerPolicy::Pinned(client_key.id()));
        let client_cfg = SessionConfig::new(Role::Client, PeerPolicy::Pinned(host_key.id()));
        Self::with_configs(seed, up, down, client_cfg, host_cfg, client_key, host_key)
    }

    pub fn with_configs(
        seed: u64,
        up: Link,
        down: Link,
        client_cfg: SessionConfig,
        host_cfg: SessionConfig,
        client_key: Arc<IdentityKey>,
        host_key: Arc<IdentityKey>,
    ) -> Self {
        let now = Instant::now();
        let client_addr: SocketAddr = "10.0.0.1:5000".parse().unwrap();
        let host_addr: SocketAddr = "10.0.0.2:4000".parse().unwrap();
        let client = Session::client(now, client_cfg, client_key.clone(), host_addr).unwrap();
        Self {
            now,
            client,
            host: None,
            host_cfg,
            host_key,
            client_key,
            client_addr,
            host_addr,
            up,
            down,
            client_events: Vec::new(),
            host_events: Vec::new(),
            bad: [false; 2],
            lost: [0; 2],
            carried: [0; 2],
            max_datagram_seen: 0,
            filter: None,
            inflight: BinaryHeap::new(),
            seq: 0,
            rng: Rng::new(seed),
            buf: vec![0u8; 64 * 1024],
        }
    }

    fn send_out(&mut self, to_host: bool, data: &[u8], seg: Option<usize>) {
        let seg = seg.unwrap_or(data.len()).max(1);
        for d in data.chunks(seg) {
            self.max_datagram_seen = self.max_datagram_seen.max(d.len());
            let link = if to_host { self.up } else { self.down };
            let dir = usize::from(!to_host);
            let lose = if link.burst > 0.0 {
                let p_bg = 1.0 / link.burst;
                let p_gb = link.loss * p_bg / (1.0 - link.loss);
                let flip = self.rng.next_f64();
                self.bad[dir] = if self.bad[dir] {
                    flip >= p_bg
                } else {
                    flip < p_gb
                };
                self.bad[dir]
            } else {
                self.rng.next_f64() < link.loss
            };
            self.carried[dir] += 1;
            if lose {
                self.lost[dir] += 1;
                continue;
            }
            let mut v = d.to_vec();
            if let Some(f) = self.filter.as_mut() {
                if !f(to_host, &mut v) {
                    continue;
                }
            }
            self.seq += 1;
            self.inflight.push(InFlight {
                at: self.now + link.delay,
                seq: self.seq,
                to_host,
                data: v,
            });
        }
    }

    fn flush(&mut self) {
        let mut buf = std::mem::take(&mut self.buf);
        while let Some(t) = self.client.poll_transmit(self.now, &mut buf, 16) {
            self.send_out(true, &buf[..t.len], t.segment_size);
        }
        if let Some(mut h) = self.host.take() {
            while let Some(t) = h.poll_transmit(self.now, &mut buf, 16) {
                self.send_out(false, &buf[..t.len], t.segment_size);
            }
            self.host = Some(h);
        }
        self.buf = buf;
        self.collect();
    }

    fn collect(&mut self) {
        while let Some(e) = self.client.poll_event() {
            self.client_events.push((self.now, e));
        }
        if let Some(h) = self.host.as_mut() {
            while let Some(e) = h.poll_event() {
                self.host_events.push((self.now, e));
            }
        }
    }

    fn deliver(&mut self, mut d: InFlight) {
        if d.to_host {
            match self.host.as_mut() {
                Some(h) => h.handle_datagram(self.now, self.client_addr, &mut d.data),
                None => {
                    // The endpoint's job: a handshake msg1 creates the host session.
                    if let Ok(Header::Handshake(hdr)) = Header::decode(&d.data) {
                        if hdr.packet_id == 1 {
                            let s = Session::accept(
                                self.now,
                                self.host_cfg.clone(),
                                self.host_key.clone(),
                                self.client_addr,
                                hdr,
                                &d.data[30..],
                            );
                            self.host = s.ok();
                        }
                    }
                }
            }
        } else {
            self.client
                .handle_datagram(self.now, self.host_addr, &mut d.data);
        }
    }

    /// Runs the pair until `until` (virtual time), calling `tick(self)` whenever a timer or
    /// delivery happens so tests can inject application data.
    pub fn run_until(&mut self, until: Instant, mut tick: impl FnMut(&mut Self)) {
        loop {
            self.flush();
            let timers = [
                self.client.poll_timeout(),
                self.host.as_mut().and_then(Session::poll_timeout),
            ];
            let next = timers
                .into_iter()
                .flatten()
                .chain(self.inflight.peek().map(|d| d.at))
                .min();
            let Some(next) = next else { break };
            let next = next.max(self.now);
            if next > until {
                break;
            }
            self.now = next;
            while self.inflight.peek().is_some_and(|d| d.at <= self.now) {
                let d = self.inflight.pop().unwrap();
                self.deliver(d);
            }
            if self.client.poll_timeout().is_some_and(|t| t <= self.now) {
                self.client.handle_timeout(self.now);
            }
            if let Some(h) = self.host.as_mut() {
                if h.poll_timeout().is_some_and(|t| t <= self.now) {
                    h.handle_timeout(self.now);
                }
            }
            self.collect();
            tick(self);
        }
        self.now = self.now.max(until);
        self.flush();
    }

    pub fn run_for(&mut self, d: Duration) {
        let until = self.now + d;
        self.run_until(until, |_| {});
    }

    pub fn connected(&self) -> bool {
        self.client.is_connected() && self.host.as_ref().is_some_and(Session::is_connected)
    }
}
