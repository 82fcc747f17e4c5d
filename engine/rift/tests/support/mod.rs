//! Test harness: a client and a host session connected through `wavry-netsim` on a virtual
//! clock (quinn's `Pair`, str0m's `progress`). Everything is in-process and deterministic.

#![allow(dead_code, unreachable_pub)]

pub mod alloc;
pub mod duo;
pub mod encoder;
pub mod endpoint;
pub mod spoof;
pub mod stream;

use std::{
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use wavry_netsim::{LinkConfig, LossModel, Netsim};
use wavry_rift::{
    crypto::PeerPolicy,
    identity::IdentityKey,
    session::{Event, Role, Session, SessionConfig},
    wire::Header,
};

/// A link with `delay`, mean loss `loss` and (when `burst` > 0) Gilbert–Elliott bursts of
/// that mean length.
pub fn link(delay: Duration, loss: f64, burst: f64) -> LinkConfig {
    let model = if loss <= 0.0 {
        LossModel::None
    } else if burst > 0.0 {
        LossModel::bursty(loss, burst)
    } else {
        LossModel::Bernoulli(loss)
    };
    LinkConfig::default().with_delay(delay).with_loss(model)
}

/// Drops (returns false) or alters a datagram in flight: `(to_host, bytes)`.
pub type Filter = Box<dyn FnMut(bool, &mut Vec<u8>) -> bool>;

pub struct Pair {
    pub now: Instant,
    pub start: Instant,
    pub client: Session,
    pub host: Option<Session>,
    pub host_cfg: SessionConfig,
    pub host_key: Arc<IdentityKey>,
    pub client_key: Arc<IdentityKey>,
    pub client_addr: SocketAddr,
    pub host_addr: SocketAddr,
    pub net: Netsim,
    pub client_events: Vec<(Instant, Event)>,
    pub host_events: Vec<(Instant, Event)>,
    pub max_datagram_seen: usize,
    pub filter: Option<Filter>,
    /// An application wake-up (e.g. the next frame's capture time): `run_until` steps to it
    /// even when no session timer or delivery falls there.
    pub wake_at: Option<Instant>,
    /// Link configurations, for the links a rebound client address needs.
    pub up_cfg: LinkConfig,
    pub down_cfg: LinkConfig,
    /// When the client first sent from each address, and when each address first received.
    pub first_send_from: std::collections::HashMap<SocketAddr, Instant>,
    pub first_delivery_to: std::collections::HashMap<SocketAddr, Instant>,
    /// Datagrams that arrived at an address nobody listens on any more (after a rebind).
    pub lost_to_old_address: u64,
    buf: Vec<u8>,
}

impl Pair {
    pub fn new(seed: u64, up: LinkConfig, down: LinkConfig) -> Self {
        let host_key = Arc::new(IdentityKey::from_seed([1; 32]).unwrap());
        let client_key = Arc::new(IdentityKey::from_seed([2; 32]).unwrap());
        let host_cfg = SessionConfig::new(Role::Host, PeerPolicy::Pinned(client_key.id()));
        let client_cfg = SessionConfig::new(Role::Client, PeerPolicy::Pinned(host_key.id()));
        Self::with_configs(seed, up, down, client_cfg, host_cfg, client_key, host_key)
    }

    /// [`Pair::new`] with `tweak(role_is_host, config)` applied to both configurations.
    pub fn with(
        seed: u64,
        up: LinkConfig,
        down: LinkConfig,
        tweak: impl Fn(bool, &mut SessionConfig),
    ) -> Self {
        let host_key = Arc::new(IdentityKey::from_seed([1; 32]).unwrap());
        let client_key = Arc::new(IdentityKey::from_seed([2; 32]).unwrap());
        let mut host_cfg = SessionConfig::new(Role::Host, PeerPolicy::Pinned(client_key.id()));
        let mut client_cfg = SessionConfig::new(Role::Client, PeerPolicy::Pinned(host_key.id()));
        tweak(true, &mut host_cfg);
        tweak(false, &mut client_cfg);
        Self::with_configs(seed, up, down, client_cfg, host_cfg, client_key, host_key)
    }

    pub fn with_configs(
        seed: u64,
        up: LinkConfig,
        down: LinkConfig,
        client_cfg: SessionConfig,
        host_cfg: SessionConfig,
        client_key: Arc<IdentityKey>,
        host_key: Arc<IdentityKey>,
    ) -> Self {
        let now = Instant::now();
        let client_addr: SocketAddr = "10.0.0.1:5000".parse().unwrap();
        let host_addr: SocketAddr = "10.0.0.2:4000".parse().unwrap();
        let mut net = Netsim::new(seed, now);
        net.add_link(client_addr, host_addr, up.clone()).unwrap();
        net.add_link(host_addr, client_addr, down.clone()).unwrap();
        let client = Session::client(now, client_cfg, client_key.clone(), host_addr).unwrap();
        Self {
            now,
            start: now,
            client,
            host: None,
            host_cfg,
            host_key,
            client_key,
            client_addr,
            host_addr,
            net,
            client_events: Vec::new(),
            host_events: Vec::new(),
            max_datagram_seen: 0,
            filter: None,
            wake_at: None,
            up_cfg: up,
            down_cfg: down,
            first_send_from: std::collections::HashMap::new(),
            first_delivery_to: std::collections::HashMap::new(),
            lost_to_old_address: 0,
            buf: vec![0u8; 64 * 1024],
        }
    }

    fn send_out(&mut self, to_host: bool, data: &[u8], seg: Option<usize>) {
        let seg = seg.unwrap_or(data.len()).max(1);
        let (from, to) = if to_host {
            (self.client_addr, self.host_addr)
        } else {
            (self.host_addr, self.client_addr)
        };
        self.first_send_from.entry(from).or_insert(self.now);
        for d in data.chunks(seg) {
            self.max_datagram_seen = self.max_datagram_seen.max(d.len());
            if let Some(f) = self.filter.as_mut() {
                let mut v = d.to_vec();
                if f(to_host, &mut v) {
                    self.net.send(self.now, from, to, &v);
                }
            } else {
                self.net.send(self.now, from, to, d);
            }
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

    /// NAT rebinding: from now on the client's datagrams come from `new`, and what the host
    /// still sends to the old address is lost.
    pub fn rebind_client(&mut self, new: SocketAddr) {
        self.net
            .add_link(new, self.host_addr, self.up_cfg.clone())
            .unwrap();
        self.net
            .add_link(self.host_addr, new, self.down_cfg.clone())
            .unwrap();
        self.client_addr = new;
    }

    fn deliver(&mut self, to: SocketAddr, from: SocketAddr, data: &mut [u8]) {
        self.first_delivery_to.entry(to).or_insert(self.now);
        if to != self.host_addr && to != self.client_addr {
            self.lost_to_old_address += 1;
            return;
        }
        if to == self.host_addr {
            match self.host.as_mut() {
                Some(h) => h.handle_datagram(self.now, from, data),
                None => {
                    // The endpoint's job: a handshake msg1 creates the host session.
                    let off = if self.host_cfg.relay.is_some() { 20 } else { 0 };
                    let data = &data[off.min(data.len())..];
                    if let Ok(Header::Handshake(hdr)) = Header::decode(data) {
                        if hdr.packet_id == 1 {
                            let s = Session::accept(
                                self.now,
                                self.host_cfg.clone(),
                                self.host_key.clone(),
                                self.client_addr,
                                hdr,
                                &data[30..],
                            );
                            self.host = s.ok();
                        }
                    }
                }
            }
        } else {
            self.client.handle_datagram(self.now, self.host_addr, data);
        }
    }

    /// Runs the pair until `until` (virtual time), calling `tick(self)` after every step so
    /// tests can inject application data.
    pub fn run_until(&mut self, until: Instant, mut tick: impl FnMut(&mut Self)) {
        let mut spins = 0u32;
        loop {
            self.flush();
            let timers = [
                self.client.poll_timeout(),
                self.host.as_mut().and_then(Session::poll_timeout),
            ];
            let next = timers
                .into_iter()
                .flatten()
                .chain(self.net.next_event_time())
                .chain(self.wake_at.filter(|&t| t > self.now))
                .min();
            let Some(next) = next else { break };
            let next = next.max(self.now);
            // A timer that stays due while nothing happens is a session bug: fail loudly
            // instead of spinning forever.
            if next == self.now {
                spins += 1;
                assert!(
                    spins <= 100_000,
                    "spin: client {} host {}",
                    self.client.debug_timers(),
                    self.host
                        .as_mut()
                        .map_or_else(String::new, Session::debug_timers)
                );
            } else {
                spins = 0;
            }
            if next > until {
                break;
            }
            self.now = next;
            while let Some(mut d) = self.net.poll_delivery(self.now) {
                self.deliver(d.to, d.from, &mut d.data);
                self.net.recycle(d);
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

    /// Runs until both sides are connected (at most `limit` of virtual time).
    pub fn connect(&mut self, limit: Duration) -> bool {
        let until = self.now + limit;
        while !self.connected() && self.now < until {
            self.run_for(Duration::from_millis(50));
        }
        self.connected()
    }

    pub fn connected(&self) -> bool {
        self.client.is_connected() && self.host.as_ref().is_some_and(Session::is_connected)
    }

    /// Loss measured on the host → client link.
    pub fn down_loss(&self) -> f64 {
        let s = self.net.stats(self.host_addr, self.client_addr).unwrap();
        s.dropped_loss as f64 / s.sent.max(1) as f64
    }
}

/// A client session and the host session its first handshake datagram creates, for tests
/// that exchange datagrams directly (no link). Identities come from the seeds `[client; 32]`
/// and `[host; 32]`, each side pinning the other; `tune` adjusts the host's config.
pub fn direct_pair(
    t0: Instant,
    (client_seed, host_seed): (u8, u8),
    (ca, ha): (SocketAddr, SocketAddr),
    tune: impl FnOnce(&mut SessionConfig),
) -> (Session, Session) {
    let hk = Arc::new(IdentityKey::from_seed([host_seed; 32]).unwrap());
    let ck = Arc::new(IdentityKey::from_seed([client_seed; 32]).unwrap());
    let client_id = ck.id();
    let mut client = Session::client(
        t0,
        SessionConfig::new(Role::Client, PeerPolicy::Pinned(hk.id())),
        ck,
        ha,
    )
    .unwrap();
    // Bootstrap: the first msg1 creates the host session.
    let mut buf = vec![0u8; 2048];
    let t = client.poll_transmit(t0, &mut buf, 1).unwrap();
    let Ok(Header::Handshake(h)) = Header::decode(&buf[..t.len]) else {
        panic!("msg1")
    };
    let mut host_cfg = SessionConfig::new(Role::Host, PeerPolicy::Pinned(client_id));
    tune(&mut host_cfg);
    let host = Session::accept(t0, host_cfg, hk, ca, h, &buf[30..t.len]).unwrap();
    (client, host)
}
