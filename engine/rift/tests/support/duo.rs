//! Two connected sessions exchanging datagrams directly (no link), and a hostile side: either
//! session can seal arbitrary plaintext with any packet id ahead of its counter
//! (`Session::seal_for_test`), so the other receives messages that authenticate but that no
//! honest peer would send.

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use wavry_rift::session::{Event, Session};

/// A connected client/host pair on a virtual clock.
pub struct Duo {
    /// When the pair was created.
    pub start: Instant,
    pub now: Instant,
    pub client: Session,
    pub host: Session,
    pub ca: SocketAddr,
    pub ha: SocketAddr,
    pub client_events: Vec<Event>,
    pub host_events: Vec<Event>,
    /// Keep events (false: drop them as they come, recycling frames).
    pub keep_events: bool,
    buf: Vec<u8>,
}

impl Duo {
    /// Connects a pair (identities from seeds 2 and 1); panics if it does not connect.
    pub fn connected() -> Self {
        Self::connected_with(|_| {})
    }

    /// [`Duo::connected`] with `tune` applied to the host's configuration.
    pub fn connected_with(tune: impl FnOnce(&mut wavry_rift::session::SessionConfig)) -> Self {
        let (ca, ha): (SocketAddr, SocketAddr) =
            ("10.0.0.1:1".parse().unwrap(), "10.0.0.2:2".parse().unwrap());
        let now = Instant::now();
        let (client, host) = super::direct_pair(now, (2, 1), (ca, ha), tune);
        let mut d = Self {
            start: now,
            now,
            client,
            host,
            ca,
            ha,
            client_events: Vec::new(),
            host_events: Vec::new(),
            keep_events: true,
            buf: vec![0; 64 * 1024],
        };
        for _ in 0..200 {
            d.step(Duration::from_millis(1));
            if d.client.is_connected() && d.host.is_connected() {
                return d;
            }
        }
        panic!("no connection");
    }

    /// Moves every queued datagram across (both ways, until quiet) and collects events.
    pub fn pump(&mut self) {
        for _ in 0..64 {
            let mut moved = false;
            while let Some(t) = self.host.poll_transmit(self.now, &mut self.buf, 1) {
                self.client
                    .handle_datagram(self.now, self.ha, &mut self.buf[..t.len]);
                moved = true;
            }
            while let Some(t) = self.client.poll_transmit(self.now, &mut self.buf, 1) {
                self.host
                    .handle_datagram(self.now, self.ca, &mut self.buf[..t.len]);
                moved = true;
            }
            if !moved {
                break;
            }
        }
        self.collect();
    }

    /// Drains both sides' events (kept, or dropped with frames recycled).
    pub fn collect(&mut self) {
        while let Some(e) = self.client.poll_event() {
            match e {
                Event::Frame(f) if !self.keep_events => self.client.recycle(f),
                e if self.keep_events => self.client_events.push(e),
                _ => {}
            }
        }
        while let Some(e) = self.host.poll_event() {
            if self.keep_events {
                self.host_events.push(e);
            }
        }
    }

    /// Advances the clock by `d`, runs due timers and pumps.
    pub fn step(&mut self, d: Duration) {
        self.now += d;
        if self.client.poll_timeout().is_some_and(|t| t <= self.now) {
            self.client.handle_timeout(self.now);
        }
        if self.host.poll_timeout().is_some_and(|t| t <= self.now) {
            self.host.handle_timeout(self.now);
        }
        self.pump();
    }

    /// The host seals `plain` (packet id at least `min_pid`) and the client receives it.
    /// Returns the packet id used.
    pub fn inject_to_client(&mut self, min_pid: u64, plain: &[u8]) -> u64 {
        let (pid, n) = self
            .host
            .seal_for_test(min_pid, plain, &mut self.buf)
            .expect("seal");
        self.client
            .handle_datagram(self.now, self.ha, &mut self.buf[..n]);
        pid
    }

    /// The client seals `plain` (packet id at least `min_pid`) and the host receives it.
    pub fn inject_to_host(&mut self, min_pid: u64, plain: &[u8]) -> u64 {
        let (pid, n) = self
            .client
            .seal_for_test(min_pid, plain, &mut self.buf)
            .expect("seal");
        self.host
            .handle_datagram(self.now, self.ca, &mut self.buf[..n]);
        pid
    }
}
