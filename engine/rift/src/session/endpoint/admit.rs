//! Handshake admission on a host endpoint: first messages (cookie replies under load, or a
//! half-open handshake), the anti-amplification budget for msg2, msg3 turning a half-open
//! handshake into a session, and half-open timers.

use std::{
    cmp::Reverse,
    net::IpAddr,
    time::{Duration, Instant},
};

use super::{
    BUSY_ANSWERS, Endpoint, HsKey, PeerAddr, Queued, RATE_WINDOW, Slot, TimerKey,
    half_open::{CookieJar, HalfOpen},
};
use crate::{
    crypto::{Handshake, HandshakeRole, HandshakeStep, MAX_HANDSHAKE_MSG},
    session::RelayPath,
    session::Session,
    wire::{FirstMessage, HandshakeHeader, HandshakeKind, RelayHeader},
};

impl Endpoint {
    /// First messages per second are estimated over two windows; is either over the limit?
    pub(super) fn count_first(&mut self, now: Instant) -> bool {
        let per_window = (self.limits.cookie_rate / 10).max(1);
        match self.rate_start {
            Some(t) if now < t + RATE_WINDOW => {}
            Some(t) => {
                self.rate_prev = if now < t + 2 * RATE_WINDOW {
                    self.rate_count
                } else {
                    0
                };
                self.rate_count = 0;
                self.rate_start = Some(now);
            }
            None => self.rate_start = Some(now),
        }
        self.rate_count += 1;
        self.rate_count.max(self.rate_prev) > per_window
    }

    /// A first message from a client with no handshake in progress.
    pub(super) fn on_first(
        &mut self,
        now: Instant,
        from: PeerAddr,
        local_ip: Option<IpAddr>,
        wire_len: usize,
        rift: &[u8],
    ) {
        let Ok(first) = FirstMessage::decode(rift) else {
            self.stats.unroutable += 1;
            return;
        };
        let hs_id = first.header.session_id;
        let jar = self
            .cookies
            .get_or_insert_with(|| CookieJar::new(now, &mut self.rng));
        jar.rotate(now, &mut self.rng);
        let validated = match &first.cookie {
            Some(c) if jar.check(now, from.addr, hs_id, c) => true,
            Some(_) => {
                self.stats.cookies_invalid += 1;
                false
            }
            None => false,
        };
        if !validated {
            let fast = self.count_first(now);
            if fast || self.half_open.len() >= self.limits.cookie_half_open {
                // Stateless: a MAC, no Diffie-Hellman, nothing kept. The reply is smaller
                // than the padded first message it answers.
                if self.queued.len() >= self.limits.max_queued_replies {
                    self.stats.half_open_dropped += 1;
                    return;
                }
                let Some(cookie) = self.cookies.as_ref().map(|j| j.make(now, from.addr, hs_id))
                else {
                    return;
                };
                self.queued.push_back(Queued::Cookie {
                    to: from,
                    src_ip: local_ip,
                    handshake_id: hs_id,
                    cookie,
                });
                self.stats.cookies_sent += 1;
                return;
            }
        }
        if self.half_open.len() >= self.limits.max_half_open && !(validated && self.evict()) {
            self.stats.half_open_dropped += 1;
            return;
        }
        let alias = hs_id as u32;
        if self.by_alias.contains_key(&alias) || self.half_alias.contains_key(&alias) {
            self.stats.unroutable += 1;
            return;
        }
        let mut rng = self.rng.fork();
        let Ok(mut hs) = Handshake::with_rng(
            HandshakeRole::Responder,
            self.identity.clone(),
            self.cfg.policy.clone(),
            rng.fork(),
        ) else {
            return;
        };
        let mut out = [0u8; MAX_HANDSHAKE_MSG];
        let Ok(HandshakeStep::Send(n)) = hs.step(Some(first.noise), &mut out) else {
            self.stats.unroutable += 1;
            return;
        };
        let mut msg2 = vec![0u8; HandshakeHeader::LEN + n].into_boxed_slice();
        if (HandshakeHeader {
            session_id: hs_id,
            packet_id: HandshakeKind::Msg2.packet_id(),
        })
        .encode(&mut msg2)
        .is_err()
        {
            self.stats.unroutable += 1;
            return;
        }
        msg2[HandshakeHeader::LEN..].copy_from_slice(&out[..n]);
        let key = (from, hs_id);
        let timeout = self
            .limits
            .half_open_timeout
            .min(self.cfg.handshake_timeout);
        self.half_open.insert(
            key,
            HalfOpen {
                hs: Box::new(hs),
                msg2,
                rng,
                local_ip,
                received: wire_len as u64,
                sent: 0,
                validated,
                expires: now + timeout,
                expires_max: now + self.cfg.handshake_timeout,
                next_retx: now + self.cfg.handshake_rto,
                rto: self.cfg.handshake_rto,
                queued: false,
                owed: false,
            },
        );
        self.half_alias.insert(alias, key);
        self.half_order.push_back(key);
        self.stats.half_open_created += 1;
        self.send_msg2(key);
        self.arm_half_open(key);
    }

    /// Drops the oldest half-open handshake whose address is not validated, for a client
    /// that proved its address. False when every one is validated.
    pub(super) fn evict(&mut self) -> bool {
        let n = self.half_order.len();
        for _ in 0..n {
            let Some(key) = self.half_order.pop_front() else {
                break;
            };
            match self.half_open.get(&key) {
                Some(h) if !h.validated => {
                    self.drop_half_open(key);
                    self.stats.half_open_dropped += 1;
                    return true;
                }
                Some(_) => self.half_order.push_back(key),
                None => {}
            }
        }
        false
    }

    pub(super) fn drop_half_open(&mut self, key: HsKey) -> Option<HalfOpen> {
        let h = self.half_open.remove(&key)?;
        self.half_alias.remove(&(key.1 as u32));
        // `half_order` and the timer heap drop their entries lazily.
        if self.half_order.len() > 2 * self.half_open.len() + 64 {
            let live = &self.half_open;
            self.half_order.retain(|k| live.contains_key(k));
        }
        Some(h)
    }

    /// Queues msg2 for `key` if the amplification budget allows it (else it is owed).
    pub(super) fn send_msg2(&mut self, key: HsKey) {
        let prefix = if key.0.relay.is_some() {
            RelayHeader::LEN
        } else {
            0
        };
        let factor = self.limits.amplification;
        let Some(h) = self.half_open.get_mut(&key) else {
            return;
        };
        if h.queued {
            return;
        }
        let len = prefix + h.msg2.len();
        if h.may_send(len, factor) {
            h.sent += len as u64;
            h.queued = true;
            h.owed = false;
            self.queued.push_back(Queued::Msg2(key));
        } else {
            h.owed = true;
            self.stats.amplification_limited += 1;
        }
    }

    /// More bytes arrived from a half-open client's address: they earn budget, and a client
    /// that keeps talking (a spoofed source never does) keeps its handshake alive up to the
    /// session's handshake timeout.
    pub(super) fn credit(&mut self, now: Instant, key: HsKey, wire_len: usize) {
        let extend = self.limits.half_open_timeout;
        let Some(h) = self.half_open.get_mut(&key) else {
            return;
        };
        h.received += wire_len as u64;
        let expires = (now + extend).min(h.expires_max).max(h.expires);
        let rearm = expires != h.expires && h.next_retx > h.expires;
        h.expires = expires;
        if h.owed {
            self.send_msg2(key);
        }
        if rearm {
            self.arm_half_open(key);
        }
    }

    pub(super) fn arm_half_open(&mut self, key: HsKey) {
        if let Some(h) = self.half_open.get(&key) {
            self.timers.push(Reverse((
                h.next_timeout(),
                TimerKey::HalfOpen(key.0, key.1),
            )));
        }
    }

    /// A handshake datagram for a half-open handshake.
    pub(super) fn on_half_open(
        &mut self,
        now: Instant,
        key: HsKey,
        header: HandshakeHeader,
        wire_len: usize,
        rift: &[u8],
    ) {
        self.credit(now, key, wire_len);
        match HandshakeKind::from_packet_id(header.packet_id) {
            Some(HandshakeKind::Msg1 | HandshakeKind::Msg1Cookie) => {
                // A repeat: our msg2 was lost (or is late). A valid cookie lifts the limit.
                if let Ok(FirstMessage {
                    cookie: Some(c), ..
                }) = FirstMessage::decode(rift)
                {
                    if self
                        .cookies
                        .as_ref()
                        .is_some_and(|j| j.check(now, key.0.addr, key.1, &c))
                    {
                        if let Some(h) = self.half_open.get_mut(&key) {
                            h.validated = true;
                        }
                    }
                }
                self.send_msg2(key);
            }
            Some(HandshakeKind::Msg3) => {
                let Some(h) = self.half_open.get_mut(&key) else {
                    return;
                };
                let mut out = [0u8; MAX_HANDSHAKE_MSG];
                match h.hs.step(Some(&rift[HandshakeHeader::LEN..]), &mut out) {
                    Ok(HandshakeStep::Complete) => self.complete(now, key),
                    Err(e) if e.is_unauthenticated() => self.stats.forged_handshake_dropped += 1,
                    Ok(_) | Err(_) => {
                        self.drop_half_open(key);
                        self.stats.handshakes_failed += 1;
                    }
                }
            }
            _ => self.stats.unroutable += 1,
        }
    }

    /// msg3 authenticated: the half-open handshake becomes a session.
    pub(super) fn complete(&mut self, now: Instant, key: HsKey) {
        let Some(h) = self.drop_half_open(key) else {
            return;
        };
        let mut cfg = self.cfg.clone();
        // Relayed or direct is a property of this session's path, not of the endpoint.
        cfg.relay = key.0.relay.map(|session_id| RelayPath { session_id });
        if self.established >= self.limits.max_sessions {
            // Full: a few sessions only answer the client's Hello with a refusal (they end at
            // their handshake deadline); beyond that, the handshake is dropped.
            self.stats.refused_full += 1;
            if self.busy >= BUSY_ANSWERS {
                return;
            }
            cfg.busy = true;
        }
        let busy = cfg.busy;
        let Ok(mut session) =
            Session::from_handshake(now, cfg, h.rng, key.0.addr, key.1, *h.hs, &h.msg2)
        else {
            self.stats.handshakes_failed += 1;
            return;
        };
        session.local_ip = h.local_ip;
        if let Some(kbps) = key
            .0
            .relay
            .and_then(|sid| self.relay_limit((key.0.addr, sid)))
        {
            session.cap_to_relay(kbps);
        }
        let i = if let Some(i) = self.free.pop() {
            i
        } else {
            self.slots.push(Slot {
                generation: 0,
                session: None,
                timer: None,
                busy: false,
                in_tx: false,
                in_ev: false,
                dirty: false,
            });
            (self.slots.len() - 1) as u32
        };
        let slot = &mut self.slots[i as usize];
        slot.generation = slot.generation.wrapping_add(1).max(1);
        slot.session = Some(session);
        slot.timer = None;
        slot.busy = busy;
        if busy {
            self.busy += 1;
        } else {
            self.established += 1;
        }
        self.by_alias.insert(key.1 as u32, i);
        self.by_handshake.insert(key, i);
        self.stats.handshakes_completed += 1;
        self.touch(i);
    }

    pub(super) fn half_open_timeout(&mut self, now: Instant, key: HsKey) {
        let Some(h) = self.half_open.get_mut(&key) else {
            return;
        };
        if now >= h.expires {
            self.drop_half_open(key);
            self.stats.half_open_expired += 1;
            return;
        }
        if now >= h.next_retx {
            h.rto = (h.rto * 2).min(Duration::from_secs(2));
            h.next_retx = now + h.rto;
            self.send_msg2(key);
        }
        self.arm_half_open(key);
    }
}
