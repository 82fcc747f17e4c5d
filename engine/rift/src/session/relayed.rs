//! A client session through a relay: the session owns its [`RelayClient`], which presents the
//! client's lease (signed), renews it and re-presents after an address change or a silent
//! path; every handshake and transport datagram of the session goes out inside FORWARD
//! (`cfg.relay`, fault 2). A host serves relayed sessions through
//! [`super::Endpoint::add_relay_path`] instead.

use std::{net::SocketAddr, sync::Arc, time::Instant};

use super::{CloseReason, Phase, RelayPath, Session, SessionConfig, SessionError, Transmit};
use crate::{
    identity::IdentityKey,
    relay_client::{RelayClient, RelayClientConfig, RelayClientStats, RelayEvent, RelayLease},
    wire::{RelayHeader, RelayType},
};

/// Share of a relay's hard limit the video target may use.
pub(super) const RELAY_HEADROOM: f64 = 0.7;

impl Session {
    /// Starts a client session through the relay `lease` names: the lease is presented at
    /// once and msg1 follows inside FORWARD. `now_unix_ms` is the wall clock at `now` (the
    /// binding signature's timestamp). `cfg.relay` is set from the lease.
    pub fn client_via_relay(
        now: Instant,
        now_unix_ms: u64,
        mut cfg: SessionConfig,
        identity: Arc<IdentityKey>,
        lease: RelayLease,
        relay_cfg: RelayClientConfig,
    ) -> Result<Self, SessionError> {
        let rc = RelayClient::new(now, now_unix_ms, lease, identity.clone(), relay_cfg)?;
        cfg.relay = Some(RelayPath {
            session_id: rc.session_id(),
        });
        let mut s = Self::client(now, cfg, identity, rc.relay_addr())?;
        s.relay_client = Some(Box::new(rc));
        Ok(s)
    }

    /// The relay client's counters, for a session through a relay.
    pub fn relay_stats(&self) -> Option<RelayClientStats> {
        self.relay_client.as_ref().map(|r| r.stats())
    }

    /// Hands the relay a fresh lease (LEASE_RENEW carries it); false without a relay.
    pub fn relay_renew_with(&mut self, now: Instant, token: String) -> Result<bool, SessionError> {
        match self.relay_client.as_mut() {
            Some(r) => {
                r.renew_with(now, token)?;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// The local address changed (new socket or interface): a relayed session re-presents its
    /// lease, signed, so the relay moves its binding. No effect on a direct session.
    pub fn local_address_changed(&mut self, now: Instant) {
        if let Some(r) = self.relay_client.as_mut() {
            r.local_address_changed(now);
        }
    }

    /// A datagram from the relay: LEASE_ACK / LEASE_REJECT are consumed here (true); a
    /// FORWARD of this session marks the path alive and goes on to the RIFT layer (false).
    pub(super) fn relay_control_in(&mut self, now: Instant, from: SocketAddr, buf: &[u8]) -> bool {
        let Some(rc) = self.relay_client.as_mut() else {
            return false;
        };
        if from != rc.relay_addr() {
            return false;
        }
        let Ok(h) = RelayHeader::decode(buf) else {
            return false;
        };
        if h.session_id != rc.session_id() {
            return false;
        }
        match h.kind {
            RelayType::Forward => {
                rc.note_received(now);
                false
            }
            RelayType::LeaseAck | RelayType::LeaseReject => {
                rc.handle_control(now, h.kind, &buf[RelayHeader::LEN..]);
                self.relay_events();
                true
            }
            _ => false,
        }
    }

    /// A rejected or unanswered lease ends the session with a typed reason.
    fn relay_events(&mut self) {
        let Some(rc) = self.relay_client.as_mut() else {
            return;
        };
        let mut end = None;
        let mut cap = None;
        while let Some(e) = rc.poll_event() {
            match e {
                RelayEvent::Rejected(r) => end = Some(CloseReason::RelayRejected(r)),
                RelayEvent::GaveUp => end = Some(CloseReason::RelayUnreachable),
                RelayEvent::Admitted(ack) => cap = Some(ack.hard_limit_kbps),
                RelayEvent::LeaseEnding { .. } => {}
            }
        }
        if let Some(kbps) = cap {
            self.cap_to_relay(kbps);
        }
        if let Some(reason) = end {
            self.finish(reason);
        }
    }

    /// Keeps DELTA under a relay's hard limit (`kbps`, from its LEASE_ACK): the relay drops
    /// what exceeds it without queueing, so a delay-based controller would never see it
    /// coming. The video target keeps 70 % of the limit, leaving room for FEC parity,
    /// retransmissions, audio, control and headers.
    pub fn cap_to_relay(&mut self, kbps: u32) {
        let cap = (f64::from(kbps) * 1000.0 * RELAY_HEADROOM) as u64;
        self.cc.set_max_bps(cap.min(self.cfg.cc.max_bps));
    }

    /// The relay client's due PRESENT / RENEW, ahead of the session's own datagrams.
    pub(super) fn relay_transmit(&mut self, now: Instant, buf: &mut [u8]) -> Option<Transmit> {
        if matches!(self.phase, Phase::Closed) {
            return None;
        }
        let rc = self.relay_client.as_mut()?;
        let len = rc.poll_transmit(now, buf)?;
        Some(Transmit {
            destination: rc.relay_addr(),
            src_ip: self.local_ip,
            ecn: None,
            len,
            segment_size: None,
        })
    }

    /// Runs the relay client's timers.
    pub(super) fn relay_timeout(&mut self, now: Instant) {
        if let Some(rc) = self.relay_client.as_mut() {
            rc.handle_timeout(now);
            self.relay_events();
        }
    }

    /// The relay client's next timer.
    pub(super) fn relay_next_timeout(&self) -> Option<Instant> {
        self.relay_client.as_ref().and_then(|r| r.poll_timeout())
    }
}
