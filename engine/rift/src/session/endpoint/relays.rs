//! Relay paths of a host endpoint: one per relayed session. The host holds its own lease for
//! that relay session (fault 4); a [`RelayClient`] presents it, renews it and re-presents when
//! the path goes silent. Handshakes arriving in FORWARD from that relay with that session id
//! are admitted like direct ones (cookies, half-open limits, amplification budget), the
//! relayed peer's "address" being (relay address, relay session id); replies go back wrapped.

use std::{cmp::Reverse, net::SocketAddr, sync::Arc, time::Instant};

use super::{Endpoint, RelayKey, TimerKey};

/// One relay path and the deadline it has in the endpoint's timer heap (entries with another
/// are stale), so traffic on the path pushes nothing into the heap.
#[derive(Debug)]
pub(super) struct RelaySlot {
    pub(super) client: RelayClient,
    pub(super) timer: Option<Instant>,
}
use crate::{
    relay_client::{RelayClient, RelayClientConfig, RelayClientError, RelayEvent, RelayLease},
    session::Transmit,
    wire::{RelayHeader, RelayType},
};

impl Endpoint {
    /// Serves one relayed session: presents the host's `lease` (role server) to its relay at
    /// once, then accepts handshakes arriving in FORWARD from that relay with the lease's
    /// session id. `now_unix_ms` is the wall clock at `now`. A path with the same relay and
    /// session id is replaced.
    pub fn add_relay_path(
        &mut self,
        now: Instant,
        now_unix_ms: u64,
        lease: RelayLease,
        cfg: RelayClientConfig,
    ) -> Result<(), RelayClientError> {
        let identity = Arc::clone(&self.identity);
        let rc = RelayClient::new(now, now_unix_ms, lease, identity, cfg)?;
        let key = (rc.relay_addr(), rc.session_id());
        self.relays.insert(
            key,
            RelaySlot {
                client: rc,
                timer: None,
            },
        );
        self.relay_ready.push_back(key);
        self.arm_relay(key);
        Ok(())
    }

    /// Stops serving a relay path (sessions on it end by their idle timeout). False when
    /// there was none.
    pub fn remove_relay_path(&mut self, relay_addr: SocketAddr, session_id: [u8; 16]) -> bool {
        self.relays.remove(&(relay_addr, session_id)).is_some()
    }

    /// Next relay-path event (admitted, rejected with a reason, unanswered, lease ending),
    /// with the relay session id.
    pub fn poll_relay_event(&mut self) -> Option<([u8; 16], RelayEvent)> {
        self.relay_events.pop_front()
    }

    /// A relay path's state: `(admitted, failed)`; `None` when there is no such path.
    pub fn relay_path_state(
        &self,
        relay_addr: SocketAddr,
        session_id: [u8; 16],
    ) -> Option<(bool, bool)> {
        self.relays
            .get(&(relay_addr, session_id))
            .map(|r| (r.client.is_admitted(), r.client.is_failed()))
    }

    /// A datagram with a relay header from `from`: control for a path is consumed (`None`);
    /// a FORWARD of a known path returns its session id; anything else is unroutable.
    pub(super) fn relay_in(
        &mut self,
        now: Instant,
        from: SocketAddr,
        buf: &[u8],
    ) -> Option<[u8; 16]> {
        let Ok(h) = RelayHeader::decode(buf) else {
            self.stats.unroutable += 1;
            return None;
        };
        let key = (from, h.session_id);
        let Some(slot) = self.relays.get_mut(&key) else {
            self.stats.unroutable += 1;
            return None;
        };
        match h.kind {
            RelayType::Forward => {
                slot.client.note_received(now);
                if slot.timer.is_none() {
                    self.arm_relay(key);
                }
                Some(h.session_id)
            }
            RelayType::LeaseAck | RelayType::LeaseReject => {
                slot.client
                    .handle_control(now, h.kind, &buf[RelayHeader::LEN..]);
                self.relay_after(key, now);
                None
            }
            RelayType::LeasePresent | RelayType::LeaseRenew => {
                self.stats.unroutable += 1;
                None
            }
        }
    }

    /// Collects a path's events, queues it for sending and re-arms its timer. A PRESENT /
    /// RENEW due now goes out from the send queue, which re-arms the path after sending;
    /// arming it here would hand `handle_timeout` a timer that is due again at once, and it
    /// would never return.
    fn relay_after(&mut self, key: RelayKey, now: Instant) {
        let Some(slot) = self.relays.get_mut(&key) else {
            return;
        };
        let mut cap = None;
        while let Some(e) = slot.client.poll_event() {
            if let RelayEvent::Admitted(ack) = &e {
                cap = Some(ack.hard_limit_kbps);
            }
            self.relay_events.push_back((key.1, e));
        }
        let rearm = slot.client.poll_timeout().is_some_and(|t| t > now);
        if let Some(kbps) = cap {
            self.cap_relayed(key.1, kbps);
        }
        self.relay_ready.push_back(key);
        if rearm {
            self.arm_relay(key);
        }
    }

    /// Caps the sessions on relay session `sid` at the relay's hard limit (see
    /// [`crate::session::Session::cap_to_relay`]).
    fn cap_relayed(&mut self, sid: [u8; 16], kbps: u32) {
        for slot in &mut self.slots {
            if let Some(s) = slot.session.as_mut()
                && s.cfg.relay.is_some_and(|r| r.session_id == sid)
            {
                s.cap_to_relay(kbps);
            }
        }
    }

    /// The hard limit the relay of path `key` gave, once it admitted the host's lease.
    pub(super) fn relay_limit(&self, key: RelayKey) -> Option<u32> {
        self.relays.get(&key)?.client.hard_limit_kbps()
    }

    fn arm_relay(&mut self, key: RelayKey) {
        let Some(slot) = self.relays.get_mut(&key) else {
            return;
        };
        let t = slot.client.poll_timeout();
        if t != slot.timer {
            slot.timer = t;
            if let Some(t) = t {
                self.timers
                    .push(Reverse((t, TimerKey::Relay(key.0, key.1))));
            }
        }
    }

    pub(super) fn relay_timeout(&mut self, now: Instant, key: RelayKey) {
        if let Some(slot) = self.relays.get_mut(&key) {
            slot.timer = None;
            slot.client.handle_timeout(now);
            self.relay_after(key, now);
        }
    }

    /// The next due PRESENT / RENEW of any path (before sessions' datagrams).
    pub(super) fn relay_transmit(&mut self, now: Instant, buf: &mut [u8]) -> Option<Transmit> {
        while let Some(&key) = self.relay_ready.front() {
            let Some(slot) = self.relays.get_mut(&key) else {
                self.relay_ready.pop_front();
                continue;
            };
            if let Some(len) = slot.client.poll_transmit(now, buf) {
                self.arm_relay(key);
                return Some(Transmit {
                    destination: key.0,
                    src_ip: None,
                    ecn: None,
                    len,
                    segment_size: None,
                });
            }
            self.relay_ready.pop_front();
            self.arm_relay(key);
        }
        None
    }
}
