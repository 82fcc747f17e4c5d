//! A host's endpoint: many sessions behind one socket, demultiplexed without trusting source
//! addresses alone — handshake packets by (source, handshake id), transport packets by session
//! alias (then the session checks the source and authenticates). New handshakes are admitted
//! only while below `max_sessions`.

use std::{collections::HashMap, net::SocketAddr, sync::Arc, time::Instant};

use super::{Event, Session, SessionConfig, Transmit};
use crate::{
    identity::IdentityKey,
    wire::{HandshakeHeader, Header, RelayHeader, RelayType},
};

/// Sessions admitted beyond `max_sessions` just to tell new clients the host is busy.
const BUSY_ANSWERS: usize = 4;

/// Index of a session inside an [`Endpoint`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SessionHandle(pub usize);

/// Demultiplexer and owner of a host's sessions.
#[derive(Debug)]
pub struct Endpoint {
    cfg: SessionConfig,
    identity: Arc<IdentityKey>,
    sessions: Vec<Option<Session>>,
    by_alias: HashMap<u32, usize>,
    by_handshake: HashMap<(SocketAddr, u128), usize>,
    max_sessions: usize,
    next_poll: usize,
    /// Datagrams that matched no session and were not a valid first handshake message.
    pub unroutable: u64,
    /// First handshake messages refused because the endpoint is full.
    pub refused_full: u64,
}

impl Endpoint {
    /// An endpoint that accepts up to `max_sessions` sessions configured from `cfg`.
    pub fn new(cfg: SessionConfig, identity: Arc<IdentityKey>, max_sessions: usize) -> Self {
        Self {
            cfg,
            identity,
            sessions: Vec::new(),
            by_alias: HashMap::new(),
            by_handshake: HashMap::new(),
            max_sessions,
            next_poll: 0,
            unroutable: 0,
            refused_full: 0,
        }
    }

    /// Live sessions (including ones only answering "busy").
    pub fn len(&self) -> usize {
        self.sessions.iter().flatten().count()
    }

    /// True when no session is live.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A session by handle.
    pub fn session_mut(&mut self, h: SessionHandle) -> Option<&mut Session> {
        self.sessions.get_mut(h.0).and_then(Option::as_mut)
    }

    /// Handles (all live sessions).
    pub fn handles(&self) -> impl Iterator<Item = SessionHandle> + '_ {
        self.sessions
            .iter()
            .enumerate()
            .filter(|(_, s)| s.is_some())
            .map(|(i, _)| SessionHandle(i))
    }

    /// Routes one datagram to its session, creating a session for a new client's msg1.
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        from: SocketAddr,
        buf: &mut [u8],
    ) -> Option<SessionHandle> {
        let rift = match &self.cfg.relay {
            Some(r) => match RelayHeader::decode(buf) {
                Ok(h) if h.kind == RelayType::Forward && h.session_id == r.session_id => {
                    &buf[RelayHeader::LEN..]
                }
                _ => {
                    self.unroutable += 1;
                    return None;
                }
            },
            None => &buf[..],
        };
        let idx = match Header::decode(rift) {
            Ok(Header::Handshake(h)) => match self.by_handshake.get(&(from, h.session_id)) {
                Some(&i) => i,
                None if h.packet_id == 1 => {
                    // When full, a few extra sessions are admitted only to answer the client's
                    // Hello with a refusal (they end at their handshake deadline); beyond that,
                    // new handshakes are dropped.
                    let busy = self.len() >= self.max_sessions;
                    if busy {
                        self.refused_full += 1;
                        if self.len() >= self.max_sessions + BUSY_ANSWERS {
                            return None;
                        }
                    }
                    let alias = h.session_id as u32;
                    if self.by_alias.contains_key(&alias) {
                        self.unroutable += 1;
                        return None;
                    }
                    let mut cfg = self.cfg.clone();
                    cfg.busy |= busy;
                    let session = Session::accept(
                        now,
                        cfg,
                        self.identity.clone(),
                        from,
                        h,
                        &rift[HandshakeHeader::LEN..],
                    )
                    .ok()?;
                    let i = self
                        .sessions
                        .iter()
                        .position(Option::is_none)
                        .unwrap_or(self.sessions.len());
                    if i == self.sessions.len() {
                        self.sessions.push(None);
                    }
                    self.sessions[i] = Some(session);
                    self.by_alias.insert(alias, i);
                    self.by_handshake.insert((from, h.session_id), i);
                    return Some(SessionHandle(i));
                }
                None => {
                    self.unroutable += 1;
                    return None;
                }
            },
            Ok(Header::Transport(t)) => {
                if let Some(&i) = self.by_alias.get(&t.alias) {
                    i
                } else {
                    self.unroutable += 1;
                    return None;
                }
            }
            Err(_) => {
                self.unroutable += 1;
                return None;
            }
        };
        let s = self.sessions.get_mut(idx)?.as_mut()?;
        s.handle_datagram(now, from, buf);
        Some(SessionHandle(idx))
    }

    /// Next datagram(s) from any session, round robin.
    pub fn poll_transmit(
        &mut self,
        now: Instant,
        buf: &mut [u8],
        max_datagrams: usize,
    ) -> Option<(SessionHandle, Transmit)> {
        let n = self.sessions.len();
        for k in 0..n {
            let i = (self.next_poll + k) % n;
            if let Some(s) = self.sessions[i].as_mut() {
                if let Some(t) = s.poll_transmit(now, buf, max_datagrams) {
                    self.next_poll = (i + 1) % n;
                    return Some((SessionHandle(i), t));
                }
            }
        }
        None
    }

    /// Next event from any session; closed sessions are removed after their last event.
    pub fn poll_event(&mut self) -> Option<(SessionHandle, Event)> {
        for i in 0..self.sessions.len() {
            let Some(s) = self.sessions[i].as_mut() else {
                continue;
            };
            if let Some(e) = s.poll_event() {
                return Some((SessionHandle(i), e));
            }
            if s.is_closed() {
                self.remove(i);
            }
        }
        None
    }

    fn remove(&mut self, i: usize) {
        if let Some(s) = self.sessions[i].take() {
            self.by_alias.remove(&s.alias());
            self.by_handshake.remove(&(s.remote(), s.handshake_id()));
        }
    }

    /// Runs every session's timers that are due.
    pub fn handle_timeout(&mut self, now: Instant) {
        for s in self.sessions.iter_mut().flatten() {
            if s.poll_timeout().is_some_and(|t| t <= now) {
                s.handle_timeout(now);
            }
        }
    }

    /// Earliest timer of any session.
    pub fn poll_timeout(&mut self) -> Option<Instant> {
        self.sessions
            .iter_mut()
            .flatten()
            .filter_map(Session::poll_timeout)
            .min()
    }
}
