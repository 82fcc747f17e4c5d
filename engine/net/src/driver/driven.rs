//! What a driver thread runs: the [`Core`] trait over an [`Endpoint`] (host) or a single
//! [`Session`] (client), so one I/O loop serves both.

use std::time::Instant;

use wavry_rift::relay_client::RelayEvent;
use wavry_rift::session::Ecn as RiftEcn;
use wavry_rift::session::{Endpoint, EndpointStats, Event, Session, SessionError, SessionHandle};

use super::CLIENT;
use crate::{Ecn, RecvMeta};

/// What a driver thread runs: an endpoint (host) or a single session (client).
pub(super) trait Core: Send + 'static {
    /// The event type handed to the application.
    type Out: Send + 'static;
    fn wrap(h: SessionHandle, e: Event) -> Self::Out;
    fn handle_datagram(&mut self, now: Instant, meta: &RecvMeta, buf: &mut [u8]);
    fn poll_transmit(
        &mut self,
        now: Instant,
        buf: &mut [u8],
        max: usize,
    ) -> Option<wavry_rift::session::Transmit>;
    fn poll_event(&mut self) -> Option<(SessionHandle, Event)>;
    fn poll_timeout(&mut self) -> Option<Instant>;
    fn handle_timeout(&mut self, now: Instant);
    fn session(&mut self, h: SessionHandle) -> Result<&mut Session, SessionError>;
    fn close_all(&mut self, now: Instant, reason: &str);
    fn endpoint_stats(&self) -> EndpointStats {
        EndpointStats::default()
    }
    /// The host's endpoint (`None` for a client).
    fn endpoint(&mut self) -> Option<&mut Endpoint> {
        None
    }
    /// The next relay-path event of a host's endpoint.
    fn poll_relay_event(&mut self) -> Option<([u8; 16], RelayEvent)> {
        None
    }
}

impl Core for Endpoint {
    type Out = (SessionHandle, Event);
    fn wrap(h: SessionHandle, e: Event) -> Self::Out {
        (h, e)
    }
    fn handle_datagram(&mut self, now: Instant, meta: &RecvMeta, buf: &mut [u8]) {
        let ecn = meta.ecn.map(|e| match e {
            Ecn::Ect0 => RiftEcn::Ect0,
            Ecn::Ect1 => RiftEcn::Ect1,
            Ecn::Ce => RiftEcn::Ce,
        });
        Endpoint::handle_datagram(self, now, meta.src, meta.dst_ip, ecn, buf);
    }
    fn poll_transmit(
        &mut self,
        now: Instant,
        buf: &mut [u8],
        max: usize,
    ) -> Option<wavry_rift::session::Transmit> {
        Endpoint::poll_transmit(self, now, buf, max)
    }
    fn poll_event(&mut self) -> Option<(SessionHandle, Event)> {
        Endpoint::poll_event(self)
    }
    fn poll_timeout(&mut self) -> Option<Instant> {
        Endpoint::poll_timeout(self)
    }
    fn handle_timeout(&mut self, now: Instant) {
        Endpoint::handle_timeout(self, now);
    }
    fn session(&mut self, h: SessionHandle) -> Result<&mut Session, SessionError> {
        self.session_mut(h)
    }
    fn endpoint_stats(&self) -> EndpointStats {
        self.stats()
    }
    fn endpoint(&mut self) -> Option<&mut Endpoint> {
        Some(self)
    }
    fn poll_relay_event(&mut self) -> Option<([u8; 16], RelayEvent)> {
        Endpoint::poll_relay_event(self)
    }
    fn close_all(&mut self, now: Instant, reason: &str) {
        let handles: Vec<SessionHandle> = self.handles().collect();
        for h in handles {
            if let Ok(s) = self.session_mut(h) {
                s.close(now, reason);
            }
        }
    }
}

impl Core for Session {
    type Out = Event;
    fn wrap(_h: SessionHandle, e: Event) -> Self::Out {
        e
    }
    fn handle_datagram(&mut self, now: Instant, meta: &RecvMeta, buf: &mut [u8]) {
        Session::handle_datagram(self, now, meta.src, buf);
    }
    fn poll_transmit(
        &mut self,
        now: Instant,
        buf: &mut [u8],
        max: usize,
    ) -> Option<wavry_rift::session::Transmit> {
        Session::poll_transmit(self, now, buf, max)
    }
    fn poll_event(&mut self) -> Option<(SessionHandle, Event)> {
        Session::poll_event(self).map(|e| (CLIENT, e))
    }
    fn poll_timeout(&mut self) -> Option<Instant> {
        Session::poll_timeout(self)
    }
    fn handle_timeout(&mut self, now: Instant) {
        if Session::poll_timeout(self).is_some_and(|t| t <= now) {
            Session::handle_timeout(self, now);
        }
    }
    fn session(&mut self, _h: SessionHandle) -> Result<&mut Session, SessionError> {
        Ok(self)
    }
    fn close_all(&mut self, now: Instant, reason: &str) {
        self.close(now, reason);
    }
}
