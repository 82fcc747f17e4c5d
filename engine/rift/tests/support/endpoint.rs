//! Test harness: a host [`Endpoint`] and several client sessions on a `wavry-netsim` network
//! with a virtual clock, plus datagrams injected at the host from addresses that have no link
//! (spoofed sources: whatever the host sends them is counted and dropped). Deterministic.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use wavry_netsim::{LinkConfig, Netsim};
use wavry_rift::{
    crypto::PeerPolicy,
    identity::IdentityKey,
    session::{Endpoint, EndpointConfig, Event, Role, Session, SessionConfig, SessionHandle},
};

/// Decides whether client `k`'s datagram goes on (true) and may inject others at the host.
pub type Filter = Box<dyn FnMut(&mut EndpointNetView, usize, &[u8]) -> bool>;

/// A datagram to inject at the host at a virtual time, from an address with no link.
pub type Injection = (Instant, SocketAddr, Vec<u8>);

pub struct EndpointNet {
    pub now: Instant,
    pub start: Instant,
    pub ep: Endpoint,
    pub host_key: Arc<IdentityKey>,
    pub host_addr: SocketAddr,
    pub net: Netsim,
    pub clients: Vec<(SocketAddr, Session)>,
    link: LinkConfig,
    rng_seed: Option<u64>,
    pub client_events: Vec<Vec<(Instant, Event)>>,
    pub host_events: Vec<(Instant, SessionHandle, Event)>,
    /// Spoofed datagrams still to inject, in time order (front first).
    pub injections: std::collections::VecDeque<Injection>,
    /// Bytes injected from, and bytes the host sent to, each address without a link.
    pub spoofed_in: HashMap<SocketAddr, u64>,
    pub spoofed_out: HashMap<SocketAddr, u64>,
    /// Every datagram in order: virtual µs, from, to, bytes (for reproducibility checks).
    pub transcript: Option<Vec<u8>>,
    /// Drops (false) or alters datagrams from a client to the host before the link.
    pub filter: Option<Filter>,
    buf: Vec<u8>,
}

/// What a filter may do besides deciding: inject extra datagrams at the host now.
#[derive(Default)]
pub struct EndpointNetView {
    pub extra: Vec<(SocketAddr, Vec<u8>)>,
}

impl EndpointNet {
    /// `n` clients (identities from seeds 10 + i, pinning the host) and a host endpoint
    /// (identity seed 1, any authenticated client) with `limits`; every link is `link`. With
    /// `rng_seed` every side's randomness is seeded from it.
    pub fn new(
        seed: u64,
        n: usize,
        link: &LinkConfig,
        limits: EndpointConfig,
        rng_seed: Option<u64>,
    ) -> Self {
        let now = Instant::now();
        let host_key = Arc::new(IdentityKey::from_seed([1; 32]).unwrap());
        let host_addr: SocketAddr = "10.0.0.2:4000".parse().unwrap();
        let mut cfg = SessionConfig::new(Role::Host, PeerPolicy::AnyAuthenticated);
        cfg.rng_seed = rng_seed;
        let ep = Endpoint::with_config(cfg, host_key.clone(), limits);
        let net = Netsim::new(seed, now);
        let mut s = Self {
            now,
            start: now,
            ep,
            host_key,
            host_addr,
            net,
            client_events: Vec::new(),
            clients: Vec::new(),
            link: link.clone(),
            rng_seed,
            host_events: Vec::new(),
            injections: std::collections::VecDeque::new(),
            spoofed_in: HashMap::new(),
            spoofed_out: HashMap::new(),
            transcript: None,
            filter: None,
            buf: vec![0u8; 64 * 1024],
        };
        for _ in 0..n {
            s.add_client();
        }
        s
    }

    /// Adds client number `clients.len()` (address 10.0.1.<k+1>:5000, identity seed 10 + k),
    /// starting its handshake now. Returns its index.
    pub fn add_client(&mut self) -> usize {
        let k = self.clients.len();
        let addr: SocketAddr = format!("10.0.1.{}:5000", k + 1).parse().unwrap();
        self.net
            .add_link(addr, self.host_addr, self.link.clone())
            .unwrap();
        self.net
            .add_link(self.host_addr, addr, self.link.clone())
            .unwrap();
        let key = Arc::new(IdentityKey::from_seed([10 + k as u8; 32]).unwrap());
        let mut ccfg = SessionConfig::new(Role::Client, PeerPolicy::Pinned(self.host_key.id()));
        ccfg.rng_seed = self.rng_seed.map(|s| s.wrapping_add(1 + k as u64));
        let c = Session::client(self.now, ccfg, key, self.host_addr).unwrap();
        self.clients.push((addr, c));
        self.client_events.push(Vec::new());
        k
    }

    fn record(&mut self, from: SocketAddr, to: SocketAddr, data: &[u8]) {
        if let Some(t) = self.transcript.as_mut() {
            let us = (self.now - self.start).as_micros() as u64;
            t.extend_from_slice(&us.to_be_bytes());
            t.extend_from_slice(format!("{from}>{to}:").as_bytes());
            t.extend_from_slice(&(data.len() as u32).to_be_bytes());
            t.extend_from_slice(data);
        }
    }

    fn flush(&mut self) {
        let mut buf = std::mem::take(&mut self.buf);
        for k in 0..self.clients.len() {
            let (addr, _) = self.clients[k];
            while let Some(t) = self.clients[k].1.poll_transmit(self.now, &mut buf, 1) {
                let d = buf[..t.len].to_vec();
                self.record(addr, t.destination, &d);
                let mut keep = true;
                let mut view = EndpointNetView::default();
                if let Some(mut f) = self.filter.take() {
                    keep = f(&mut view, k, &d);
                    self.filter = Some(f);
                }
                for (from, mut extra) in view.extra {
                    self.ep
                        .handle_datagram(self.now, from, None, None, &mut extra);
                }
                if keep {
                    self.net.send(self.now, addr, t.destination, &d);
                }
            }
        }
        while let Some(t) = self.ep.poll_transmit(self.now, &mut buf, 1) {
            let d = &buf[..t.len];
            if self.clients.iter().any(|(a, _)| *a == t.destination) {
                self.net.send(self.now, self.host_addr, t.destination, d);
            } else {
                *self.spoofed_out.entry(t.destination).or_default() += t.len as u64;
            }
            let d = d.to_vec();
            self.record(self.host_addr, t.destination, &d);
        }
        self.buf = buf;
        for (k, (_, c)) in self.clients.iter_mut().enumerate() {
            while let Some(e) = c.poll_event() {
                self.client_events[k].push((self.now, e));
            }
        }
        while let Some((h, e)) = self.ep.poll_event() {
            self.host_events.push((self.now, h, e));
        }
    }

    /// Runs until `until` (virtual time), calling `tick` after every step.
    pub fn run_until(&mut self, until: Instant, mut tick: impl FnMut(&mut Self)) {
        let mut spins = 0u32;
        loop {
            self.flush();
            let next = self
                .clients
                .iter_mut()
                .filter_map(|(_, c)| c.poll_timeout())
                .chain(self.ep.poll_timeout())
                .chain(self.net.next_event_time())
                .chain(self.injections.front().map(|i| i.0))
                .min();
            let Some(next) = next else { break };
            let next = next.max(self.now);
            if next == self.now {
                spins += 1;
                assert!(spins <= 100_000, "spin at {:?}", self.now - self.start);
            } else {
                spins = 0;
            }
            if next > until {
                break;
            }
            self.now = next;
            while self.injections.front().is_some_and(|i| i.0 <= self.now) {
                let (_, from, mut d) = self.injections.pop_front().unwrap();
                *self.spoofed_in.entry(from).or_default() += d.len() as u64;
                self.record(from, self.host_addr, &d);
                self.ep.handle_datagram(self.now, from, None, None, &mut d);
            }
            while let Some(mut d) = self.net.poll_delivery(self.now) {
                if d.to == self.host_addr {
                    self.record(d.from, d.to, &d.data);
                    self.ep
                        .handle_datagram(self.now, d.from, None, None, &mut d.data);
                } else if let Some((_, c)) = self.clients.iter_mut().find(|(a, _)| *a == d.to) {
                    c.handle_datagram(self.now, d.from, &mut d.data);
                }
                self.net.recycle(d);
            }
            for (_, c) in &mut self.clients {
                if c.poll_timeout().is_some_and(|t| t <= self.now) {
                    c.handle_timeout(self.now);
                }
            }
            self.ep.handle_timeout(self.now);
            self.flush();
            tick(self);
        }
        self.now = self.now.max(until);
        self.flush();
    }

    pub fn run_for(&mut self, d: Duration) {
        let until = self.now + d;
        self.run_until(until, |_| {});
    }

    /// When client `k` reported `Connected`, if it did.
    pub fn connected_at(&self, k: usize) -> Option<Instant> {
        self.client_events[k]
            .iter()
            .find(|(_, e)| matches!(e, Event::Connected { .. }))
            .map(|(t, _)| *t)
    }

    /// Host handles of connected sessions, in the order they connected.
    pub fn host_connected(&self) -> Vec<SessionHandle> {
        self.host_events
            .iter()
            .filter(|(_, _, e)| matches!(e, Event::Connected { .. }))
            .map(|(_, h, _)| *h)
            .collect()
    }
}
